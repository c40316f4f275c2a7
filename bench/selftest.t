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
use IO::Select;
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Socket qw(SOL_SOCKET);
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
my $owner = $$;

# a server that closes while a test still writes is an error to see (EPIPE),
# not the end of the test
$SIG{PIPE} = 'IGNORE';

# whatever happens, the servers started here do not outlive the test (nor
# hold prove's pipe open)
END {
    if ($$ == $owner) {
        local $?;
        kill 'KILL', @servers;
        waitpid $_, 0 for @servers;
    }
}

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

# a send that fails closes the connection; the same event's EPOLLIN or
# EPOLLERR then finds it closed, and reads nothing from the descriptor it
# had (a recv on a closed or reused descriptor, a second close).  Here the
# server hands it a long task, reads nothing, and closes: its unread input
# makes that a reset, which comes while cb_browser has frames waiting to go
$port = ws_server(sub {
    my ($s) = @_;
    my $task = '{"type":"task","request_id":"r1","messages":[{"role":"user",'
               . '"content":"[[chunks 1000000]]"}]}';
    syswrite $s, pack('CC', 0x81, length $task) . $task;
    sleep 1;
});
($rc, $out) = run_for(20, "$bin/cb_browser", '--connect', "127.0.0.1:$port",
                      '--window', 0, '--text', 'x' x 1000, '--max-seconds', 2);
is($rc, 0, 'cb_browser: the server resets the connection while it writes')
    or diag($out);
my @closed = $out =~ /^cb_browser: connection 0: (.*)$/mg;
is(scalar @closed, 1, 'the connection is closed once, by the send that '
   . 'failed') or diag($out);
unlike($out, qr/Bad file descriptor/, 'and nothing reads it after')
    or diag($out);

# more than 16 MiB of small frames in one burst: no more than a frame is
# ever held, and the bound is a frame's, not a burst's.  cb_browser is
# stopped while the server queues them all (pongs, which it only counts,
# then a close frame), so that it finds them all at once when it goes on
# (a send buffer that large takes root, SO_SNDBUFFORCE; else only a part
# is queued, and the rest comes as it reads)
{
    my $pongs = 200_000;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1) or die "listen: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$dir/out" or die;
        open STDERR, '>&', \*STDOUT;
        exec "$bin/cb_browser", '--connect', '127.0.0.1:' . $l->sockport,
             '--max-seconds', 2 or POSIX::_exit(127);
    }
    my $s = IO::Select->new($l)->can_read(10) ? $l->accept : undef;
    close $l;
    my $req = '';
    while ($s && $req !~ /\r\n\r\n/) {
        sysread($s, my $buf, 4096) or last;
        $req .= $buf;
    }
    if ($s) {
        setsockopt($s, SOL_SOCKET, eval { Socket::SO_SNDBUFFORCE() } // 32,
                   pack('i', 64 << 20));
        syswrite $s, "HTTP/1.1 101 Switching Protocols\r\n"
                     . "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        sysread($s, my $hello, 4096);
        my $welcome = '{"type":"welcome","v":1}';
        my $frames = pack('CC', 0x81, length $welcome) . $welcome
                     . (pack('CC', 0x8a, 125) . ('p' x 125)) x $pongs
                     . pack('CCn', 0x88, 2, 1000);
        kill 'STOP', $pid;
        $s->blocking(0);
        my $n = syswrite($s, $frames) // 0;
        substr($frames, 0, $n) = '';
        kill 'CONT', $pid;
        $s->blocking(1);
        while (length $frames) {
            $n = syswrite($s, $frames) // last;
            substr($frames, 0, $n) = '';
        }
    }
    my $t0 = time;
    sleep 0.05 while waitpid($pid, WNOHANG) == 0 && time - $t0 < 20;
    if (kill 0, $pid) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    close $s if $s;
    $out = do { local (@ARGV, $/) = "$dir/out"; <> } // '';
    like($out, qr/^cb_browser: connection 0: close frame 1000$/m,
         sprintf('cb_browser: %.1f MiB of frames in one burst are read to '
                 . 'the close frame after them', $pongs * 127 / 1048576))
        or diag($out);
    unlike($out, qr/too much input/, 'not "too much input"') or diag($out);
    like($out, qr/\bframes_in=${\ ($pongs + 2) }\b/,
         'every frame counted (the welcome, the pongs, the close)')
        or diag($out);
}

# a frame of exactly 16 MiB, the bound, is taken; one byte more is not
for ([16 << 20, 'taken', qr/^cb_browser: connection 0: close frame 1000$/m],
     [(16 << 20) + 1, 'refused', qr/a frame over 16 MiB/]) {
    my ($len, $what, $says) = @$_;
    $port = ws_server(sub {
        my ($s) = @_;
        my $frames = pack('CCNN', 0x82, 127, 0, $len) . ('b' x $len)
                     . pack('CCn', 0x88, 2, 1000);
        while (length $frames) {
            my $n = syswrite($s, $frames) // return;
            substr($frames, 0, $n) = '';
        }
        sleep 30;
    });
    ($rc, $out) = run_for(30, "$bin/cb_browser", '--connect',
                          "127.0.0.1:$port", '--max-seconds', 1.5);
    like($out, $says, "cb_browser: a frame of $len bytes is $what")
        or diag($out);
}

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

# a server that refuses every connection (a port nobody listens on): the
# connections are opened again after a pause that grows to 50 ms, not as
# fast as the CPU allows
{
    my $closed = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                       LocalPort => 0, Listen => 1)->sockport;
    my @t0 = times;
    ($rc, $out, $took) = run_for(20, @load[0 .. 4], '--conns', 4,
                                 '--duration', 1, '--warmup', '0.1',
                                 '--connect', "127.0.0.1:$closed");
    my @t1 = times;
    my $cpu = $t1[2] + $t1[3] - $t0[2] - $t0[3];
    is($rc, 0, 'cb_load: a server that refuses connections') or diag($out);
    %r = $out =~ /(\w+)=(\S+)/g;
    ok(($r{errors} // 0) > 4 && $r{errors} < 1000,
       "each connection tried again and again, after a pause ($r{errors} "
       . 'errors in 1 s)') or diag($out);
    ok($cpu < 0.3, sprintf('without spinning: %.2f s of CPU in %.1f s', $cpu,
                           $took)) or diag($out);
}

# --- cb_sse_server: a Content-Length that is not a number, or larger than
#     a request may be (1 MiB with its headers), closes the connection; the
#     server goes on.  A request of exactly 1 MiB is answered.

open my $afh, '>', "$dir/answer.json" or die;
print $afh '{"ok":true}';
close $afh;
open $afh, '>', "$dir/answer.sse" or die;
print $afh map { "data: $_\n\n" } ('{"role"}', '{"content":"x"}', '{"finish"}',
                                   '[DONE]');
close $afh;

{
    my $sport = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Listen => 1)->sockport;
    my $pid = fork() // die;
    if ($pid == 0) {
        open STDOUT, '>', "$dir/sse-cl.out" or die;
        open STDERR, '>&', \*STDOUT;
        exec "$bin/cb_sse_server", '--listen', "127.0.0.1:$sport", '--json',
             "$dir/answer.json", '--sse', "$dir/answer.sse"
            or POSIX::_exit(127);
    }
    push @servers, $pid;

    # what the server answers $req with, until it closes (2 s at most)
    my $ask = sub {
        my ($req) = @_;
        my $c;
        for (1 .. 50) {
            last if $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                               PeerPort => $sport);
            sleep 0.05;
        }
        $c or return 'no connection';
        while (length $req) {
            my $n = syswrite($c, $req) // last;
            substr($req, 0, $n) = '';
        }
        my ($in, $t0, $eof) = ('', time, 0);
        my $sel = IO::Select->new($c);
        while (time - $t0 < 2) {
            next unless $sel->can_read(0.1);
            my $n = sysread($c, my $buf, 65536);
            $eof = 1, last unless $n;
            $in .= $buf;
            last if $in =~ /^Content-Length: (\d+)\r\n.*?\r\n\r\n(.*)\z/ms
                    && length $2 >= $1;
        }
        return wantarray ? ($in, $eof) : $in;
    };
    my $post = sub {
        my ($cl, $body) = @_;
        return "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: $cl\r\n\r\n"
               . $body;
    };

    like($ask->($post->(11, '{"a":"b"}xx')), qr{^HTTP/1\.1 200 },
         'cb_sse_server answers a request');
    for my $cl ('-1', '18446744073709551615', '18446744073709551616',
                '1048577', 'abc', '') {
        my ($in, $eof) = $ask->($post->($cl, '{"stream":true}'));
        ok($in eq '' && $eof, "Content-Length: \"$cl\": closed at once, "
           . 'unanswered') or diag($in);
        ok(kill(0, $pid) && waitpid($pid, WNOHANG) == 0,
           'and cb_sse_server goes on');
    }
    like(do { local (@ARGV, $/) = "$dir/sse-cl.out"; <> } // '',
         qr/bad or too large Content-Length/, 'saying why');

    my $room = 1048576 - length($post->(1048576 - length($post->(0, '')),
                                        ''));
    for ([$room, 'answered'], [$room + 1, 'too much']) {
        my ($n, $what) = @$_;
        my $req = $post->($n, '{"a":"' . ('a' x ($n - 8)) . '"}');
        my ($in, $eof) = $ask->($req);
        if ($what eq 'answered') {
            is(length $req, 1048576, 'a request of 1 MiB');
            like($in, qr{^HTTP/1\.1 200 }, 'is answered') or diag($in);
        } else {
            ok($in eq '' && $eof, 'one byte more is not') or diag($in);
        }
    }
    like($ask->($post->(11, '{"a":"b"}xx')), qr{^HTTP/1\.1 200 },
         'and it answers the next');
    kill 'TERM', $pid;
    waitpid $pid, 0;
    @servers = grep { $_ != $pid } @servers;
}

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

# --- bench/run.sh pins to the CPUs this process may run on (a container's
#     --cpuset-cpus=2,3: CPUs 2 and 3), not to 0 and 1 because nproc says 2.
#     BENCH_PLAN=1: it prints what it would use and stops (the BUILD here
#     has no build: it would stop there, were BENCH_PLAN not honoured)

# a CPU list as the CPUs in it
sub cpus_of {
    return map { /^(\d+)-(\d+)$/ ? ($1 .. $2) : $_ } split /,/, $_[0];
}

sub cpu_plan {
    my (@pre) = @_;
    my ($rc, $out) = run_for(10, 'env', 'BENCH_PLAN=1', "BUILD=$dir/nobuild",
                             @pre, "$TOP/bench/run.sh");
    my %p = $out =~ /^(\w+)=(.*)$/mg;
    return ($rc, $out, \%p);
}

my ($list) = (do { local (@ARGV, $/) = '/proc/self/status'; <> } // '')
             =~ /^Cpus_allowed_list:\s*(\S+)/m;
my @allowed = cpus_of($list // '');
my $plan;
($rc, $out, $plan) = cpu_plan();
is($rc, 0, 'bench/run.sh BENCH_PLAN=1') or diag($out);
is($plan->{cpus}, "@allowed", "the CPUs it may run on: @allowed")
    or diag($out);
if (@allowed >= 2) {
    is("$plan->{server} $plan->{load}", "$allowed[0] $allowed[1]",
       'the servers on the first, the load on the second') or diag($out);
    is($plan->{spinners}, "@allowed", 'a spinner on each') or diag($out);
}

SKIP: {
    skip 'taskset is missing', 4
        unless grep { -x "$_/taskset" } split /:/, $ENV{PATH};

    # one CPU allowed, while nproc (which honours OMP_NUM_THREADS) says
    # two: as in a container limited to one CPU of a bigger machine
    ($rc, $out, $plan) = cpu_plan('OMP_NUM_THREADS=2', 'taskset', '-c',
                              $allowed[-1]);
    is($rc, 0, "under taskset -c $allowed[-1], nproc saying 2") or diag($out);
    is($plan->{cpus}, $allowed[-1], "CPU $allowed[-1] only") or diag($out);
    is("$plan->{server}|$plan->{load}|$plan->{spinners}", '||',
       'no pinning, no spinners') or diag($out);

    skip 'fewer than three CPUs here', 1 if @allowed < 3;
    ($rc, $out, $plan) = cpu_plan('taskset', '-c', "$allowed[1],$allowed[2]");
    is("$plan->{server} $plan->{load} $plan->{spinners}",
       "$allowed[1] $allowed[2] $allowed[1] $allowed[2]",
       "under taskset -c $allowed[1],$allowed[2]: those two") or diag($out);
}

kill 'TERM', @servers;
waitpid $_, 0 for @servers;
@servers = ();
done_testing;
