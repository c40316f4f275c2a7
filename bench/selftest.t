# The benchmark's own programs against scripted servers that misbehave:
# each must stop, fail or carry on as it says, never hang or spin.
#
#   prove bench/selftest.t           (make bench-smoke runs it first)
#
# BUILD: make's build folder (build/), where build/bench/ has the programs.

use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);

my $TOP = abs_path(dirname(__FILE__) . '/..');
my $build = $ENV{BUILD} // 'build';
$build = "$TOP/$build" unless $build =~ m{^/};
my $bin = "$build/bench";

for (qw(cb_browser cb_load cb_sse_server)) {
    plan skip_all => "$bin/$_ is missing: make bench-bin" unless -x "$bin/$_";
}

my $dir = tempdir('cb-bench-selftest-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my @servers;

# a server on a port of its own, each connection handled by $conn->($sock)
# in turn, in a child process; returns the port
sub server {
    my ($conn) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 64, ReuseAddr => 1)
        or die "listen: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $SIG{TERM} = sub { POSIX::_exit(0) };
        while (my $s = $l->accept) {
            $conn->($s);
            close $s;
        }
        POSIX::_exit(0);
    }
    push @servers, $pid;
    my $port = $l->sockport;
    close $l;
    return $port;
}

# a command's exit code, output and seconds taken; undef as the code when
# it had to be killed after $limit seconds
sub run_for {
    my ($limit, @cmd) = @_;
    my $t0 = time;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$dir/out" or die;
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    my $rc;
    while (time - $t0 < $limit) {
        if (waitpid($pid, WNOHANG) == $pid) {
            $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
            last;
        }
        sleep 0.05;
    }
    if (!defined $rc) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    my $out = do { local (@ARGV, $/) = "$dir/out"; <> } // '';
    return ($rc, $out, time - $t0);
}

# --- cb_browser: the WebSocket handshake, welcome, then $after->($sock)

sub ws_server {
    my ($after) = @_;
    return server(sub {
        my ($s) = @_;
        my $req = '';
        while ($req !~ /\r\n\r\n/) {
            sysread($s, my $buf, 4096) or return;
            $req .= $buf;
        }
        syswrite $s, "HTTP/1.1 101 Switching Protocols\r\n"
                     . "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        sysread($s, my $hello, 4096);                   # the hello frame
        my $welcome = '{"type":"welcome","v":1}';
        syswrite $s, pack('CC', 0x81, length $welcome) . $welcome;
        $after->($s);
    });
}

my $port = ws_server(sub { sleep 30 });                 # never a pong
my ($rc, $out, $took) = run_for(20, "$bin/cb_browser", '--connect',
    "127.0.0.1:$port", '--rtt', 5, '--max-seconds', 1);
is($rc, 1, 'cb_browser --rtt: no pong within --max-seconds: it fails')
    or diag($out);
like($out, qr/0 of 5 round trips in --max-seconds 1; giving up/,
     'saying so');
ok($took < 5, sprintf('after about a second (%.1f s)', $took));

$port = ws_server(sub { });                             # closes at once
($rc, $out, $took) = run_for(10, "$bin/cb_browser", '--connect',
    "127.0.0.1:$port", '--rtt', 5);
is($rc, 1, 'cb_browser --rtt: the connection closes: it fails at once')
    or diag($out);
like($out, qr/the connection closed after 0 of 5 round trips/, 'saying so');

# a frame whose length would wrap around when added to its header's
$port = ws_server(sub {
    my ($s) = @_;
    syswrite $s, pack('CCNN', 0x81, 127, 0xffffffff, 0xfffffffa) . 'xxxxxxxx';
    sleep 30;
});
($rc, $out) = run_for(10, "$bin/cb_browser", '--connect', "127.0.0.1:$port",
                      '--rtt', 5);
is($rc, 1, 'cb_browser: a frame of 2^64 - 6 bytes: it fails, without a '
   . 'crash') or diag($out);
like($out, qr/a frame over 16 MiB/, 'saying so');

$port = ws_server(sub { sleep 30 });
($rc, $out) = run_for(10, "$bin/cb_browser", '--connect', "127.0.0.1:$port",
                      '--path', '/' . ('p' x 2000), '--rtt', 1);
is($rc, 1, 'cb_browser: a --path too long for its request: it fails');
like($out, qr/too long/, 'saying so') or diag($out);

# --- cb_load

# answers each request read with $answer; closes after one if $once
sub http_server {
    my ($answer, $once) = @_;
    return server(sub {
        my ($s) = @_;
        my $in = '';
        for (;;) {
            while ($in !~ /\r\n\r\n/) {
                sysread($s, my $buf, 4096) or return;
                $in .= $buf;
            }
            my ($len) = $in =~ /^Content-Length: (\d+)/mi;
            $in =~ s/\A.*?\r\n\r\n//s;
            while (length $in < ($len // 0)) {
                sysread($s, my $buf, 4096) or return;
                $in .= $buf;
            }
            substr($in, 0, $len // 0) = '';
            syswrite $s, $answer;
            return if $once;
        }
    });
}

my @load = ("$bin/cb_load", '--mode', 'json', '--conns', 1, '--duration',
            '0.5', '--warmup', '0.1');

# a Transfer-Encoding that is not chunked
$port = http_server("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n"
                    . "Content-Length: 5\r\n\r\nhello");
($rc, $out) = run_for(20, @load, '--connect', "127.0.0.1:$port");
is($rc, 0, 'cb_load: Transfer-Encoding without chunked') or diag($out);
my %r = $out =~ /(\w+)=(\S+)/g;
ok(($r{requests} // 0) > 10 && $r{errors} eq '0',
   "read by Content-Length ($r{requests} requests, $r{errors} errors)")
    or diag($out);

# a server that closes every connection after one answer (keep-alive as
# far as its headers say): the client opens another and goes on
$port = http_server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1);
($rc, $out) = run_for(20, @load, '--connect', "127.0.0.1:$port");
is($rc, 0, 'cb_load: connections closed after each answer') or diag($out);
%r = $out =~ /(\w+)=(\S+)/g;
ok(($r{requests} // 0) > 10,
   "each one failed is opened again: $r{requests} requests in the window "
   . "($r{errors} errors)") or diag($out);

($rc, $out) = run_for(10, @load, '--connect', "127.0.0.1:$port", '--path',
                      '/' . ('p' x 2000));
is($rc, 1, 'cb_load: a --path too long for its request: it fails');
like($out, qr/too long/, 'saying so') or diag($out);

# --- cb_sse_server out of descriptors: it stops accepting for a while
#     instead of finding the listener readable and failing, turn after turn

SKIP: {
    skip 'prlimit is missing', 2 unless grep { -x "$_/prlimit" }
                                        split /:/, $ENV{PATH};
    open my $fh, '>', "$dir/answer.json" or die;
    print $fh '{"ok":true}';
    close $fh;
    open $fh, '>', "$dir/answer.sse" or die;
    print $fh map { "data: $_\n\n" } ('{"role"}', '{"content":"x"}',
                                      '{"finish"}', '[DONE]');
    close $fh;

    my $sport = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                      Listen => 1)->sockport;
    my $pid = fork() // die;
    if ($pid == 0) {
        open STDOUT, '>', "$dir/sse.out" or die;
        open STDERR, '>&', \*STDOUT;
        exec 'prlimit', '--nofile=8:8', "$bin/cb_sse_server", '--listen',
             "127.0.0.1:$sport", '--json', "$dir/answer.json", '--sse',
             "$dir/answer.sse" or POSIX::_exit(127);
    }
    my @c;
    for (1 .. 50) {
        last if @c = grep { $_ } IO::Socket::INET->new(
            PeerAddr => '127.0.0.1', PeerPort => $sport);
        sleep 0.05;
    }
    push @c, IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                   PeerPort => $sport) for 1 .. 8;
    sleep 0.3;
    my $cpu = sub {
        my @f = split ' ', ((do { local (@ARGV, $/) = "/proc/$pid/stat"; <> }
                             // '') =~ s/^.*\) //sr);
        return (($f[11] // 0) + ($f[12] // 0)) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
    };
    my $c0 = $cpu->();
    sleep 1;
    my $used = $cpu->() - $c0;
    ok($used < 0.3, sprintf('cb_sse_server at its descriptor limit with '
                            . 'connections waiting: %.2f s of CPU in 1 s',
                            $used));
    like(do { local (@ARGV, $/) = "$dir/sse.out"; <> } // '',
         qr/accept: Too many open files; pausing/, 'and it says why');
    close $_ for @c;
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

kill 'TERM', @servers;
waitpid $_, 0 for @servers;
done_testing;
