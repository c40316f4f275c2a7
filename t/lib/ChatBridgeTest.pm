package ChatBridgeTest;

# A small harness for chatbridge's integration tests, in the spirit of
# Test::Nginx (which Debian does not package): it starts the real sidecar,
# Debian's nginx with the module, and scripted browsers, on ports and paths
# chosen at run time, and stops them by pid.  Every instance checks at the
# end that nginx's error log has no [alert], [crit] or [emerg] line.

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Socket qw(SOL_SOCKET SO_REUSEADDR);
use Test::More;
use Time::HiRes qw(time sleep);

our $TOP = abs_path(dirname(__FILE__) . '/../..');
our $NGINX = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
# make's build folder (make test passes BUILD), relative to the top
our $BUILD = do { my $b = length($ENV{BUILD} // '') ? $ENV{BUILD} : 'build';
                  $b =~ m{^/} ? $b : "$TOP/$b" };
our $MODULE = "$BUILD/nginx/ngx_http_chatbridge_module.so";
our $SIDECAR = "$BUILD/chatbridge-sidecar";

our @EXPORT_OK = qw(put slurp);

my $json = JSON::PP->new->utf8->canonical;

# write a file whole; read one whole
sub put {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh or die "$file: $!";
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or die "$file: $!";
    local $/;
    return scalar <$fh>;
}

# a test stopped by a signal (^C, a timeout) still runs its destructors,
# which stop every process it started
$SIG{$_} = sub { exit 1 } for qw(INT TERM HUP);

sub new {
    my ($class, %o) = @_;

    my $dir = tempdir('cbtest-XXXXXX', TMPDIR => 1,
                      CLEANUP => !$ENV{CB_KEEP});
    chmod 0755, $dir;
    mkdir "$dir/tmp";
    chmod 01777, "$dir/tmp";

    my $self = bless {
        dir => $dir,
        port => free_port(),
        token => 'test-token-' . int(rand(1e9)),
        pids => {},
        browsers => [],
        owner => $$,
        %o,
    }, $class;

    return $self;
}

sub dir { $_[0]{dir} }
sub port { $_[0]{port} }
sub token { $_[0]{token} }
sub url { "http://127.0.0.1:$_[0]{port}" . ($_[1] // '') }

# a port nothing listens on now (bind 0, read it, close)
sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1)
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub spawn {
    my ($self, $name, $out, @cmd) = @_;

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDOUT, '>>', $out or die "$out: $!";
        open STDERR, '>&', \*STDOUT;
        exec @cmd or die "exec $cmd[0]: $!";
    }

    $self->{pids}{$pid} = $name;
    return $pid;
}

sub start_sidecar {
    my ($self, @args) = @_;

    my @group = $> == 0 ? ('--control-group', 'nogroup') : ();

    my $pid = $self->spawn('sidecar', "$self->{dir}/sidecar.log", $SIDECAR,
                           '--control', "$self->{dir}/sidecar.sock",
                           '--listen', "unix:$self->{dir}/ws.sock",
                           '--token', $self->{token},
                           '--log-level', ($ENV{CB_LOG} // 'info'), @group, @args);
    $self->{sidecar} = $pid;

    wait_for(sub { -S "$self->{dir}/sidecar.sock" && -S "$self->{dir}/ws.sock" },
             5) or die "the sidecar did not start:\n" . $self->log('sidecar');

    return $pid;
}

sub kill_sidecar {
    my ($self, $signal) = @_;
    my $pid = delete $self->{sidecar} or return;
    kill $signal // 'TERM', $pid;
    reap($pid, 10) or do { kill 'KILL', $pid; waitpid $pid, 0 };
    delete $self->{pids}{$pid};
}

# %o: http => text for http{}, location => text for location /v1/,
#     server => text for server{}, workers => N, shutdown_timeout => T
#     (worker_shutdown_timeout, 30s); or conf => a whole
#     configuration that listens on $self->port (tls => 1: with TLS)
sub start_nginx {
    my ($self, %o) = @_;

    my $dir = $self->{dir};
    my $workers = $o{workers} // 2;

    # a whole configuration says how many workers it runs (nginx's default
    # is one; auto is one per online CPU, as nginx counts them)
    if (defined $o{conf}) {
        my ($n) = $o{conf} =~ /^\s*worker_processes\s+(\w+)\s*;/m;
        $workers = !defined $n ? 1
                 : $n eq 'auto' ? (`getconf _NPROCESSORS_ONLN` + 0 || 1)
                 : $n;
    }

    $self->{conf} = $self->nginx_conf(%o);

    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh $self->{conf};
    close $fh;

    my $pid = $self->spawn('nginx', "$dir/nginx.out", $NGINX, '-p', $dir,
                           '-c', "$dir/nginx.conf", '-e', "$dir/error.log");
    $self->{nginx} = $pid;

    wait_for(sub { my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                                 PeerPort => $self->{port});
                   $s ? 1 : 0 }, 5)
        or die "nginx did not start:\n" . $self->log('nginx.out')
               . $self->log('error');

    # a configuration without "daemon off" would leave a master behind
    die "nginx went to the background (daemon off; is missing)\n"
        if waitpid($pid, WNOHANG) == $pid;

    # the workers link to the sidecar right after they start (seen on
    # /chatbridge/status over plain http, unless the test says it cannot:
    # TLS, or linked => 0 for a configuration without a status location)
    $self->{workers} = $workers;
    $self->{linked} = !$o{tls} && ($o{linked} // 1);
    if ($self->{sidecar} && $self->{linked}) {
        $self->wait_linked($workers)
            or die "the workers did not link to the sidecar:\n"
                   . $self->log('error') . $self->log('sidecar');
    }

    return $pid;
}

sub wait_linked {
    my ($self, $workers) = @_;
    return wait_for(sub {
        my $s = $self->status;
        ($s->{link} // '') eq 'ready' && @{ $s->{workers} // [] } >= $workers;
    }, 5);
}

# the pids of nginx's workers now: the master's children
sub worker_pids {
    my ($self) = @_;
    my $master = $self->{nginx} or return;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        my ($pid, $ppid) = $line =~ /^(\d+) \(.*\) \S+ (\d+)/s or next;
        push @pids, $pid if $ppid == $master;
    }
    return @pids;
}

# "nginx -t" of the configuration start_nginx would write for %o: returns
# the exit code and what nginx said
sub nginx_test {
    my ($self, %o) = @_;

    my $file = "$self->{dir}/test.conf";
    open my $fh, '>', $file or die $!;
    print $fh $self->nginx_conf(%o);
    close $fh;

    my $out = qx{$NGINX -t -p $self->{dir} -c $file -e $self->{dir}/test-error.log 2>&1};
    return ($? >> 8, $out);
}

# For a whole configuration of a test's own: the main context's lines that
# keep nginx in the foreground with its files in the test's directory
# (user => 'www-data', else nobody as root; workers => N, 1)...
sub main_conf {
    my ($self, %o) = @_;
    my $dir = $self->{dir};
    my $user = $o{user} // ($> == 0 ? 'nobody nogroup' : undef);
    return join "\n", (defined $user ? "user $user;" : ()),
        'worker_processes ' . ($o{workers} // 1) . ';', 'daemon off;',
        'master_process on;', "pid $dir/nginx.pid;",
        "lock_file $dir/nginx.lock;", "error_log $dir/error.log info;", '';
}

# ... and http {}'s: temp paths and the access log in that directory
sub http_paths {
    my ($self) = @_;
    my $dir = $self->{dir};
    return join '', (map { "    ${_}_temp_path $dir/tmp/$_;\n" }
                         qw(client_body proxy fastcgi uwsgi scgi)),
                    "    access_log $dir/access.log;\n";
}

sub nginx_conf {
    my ($self, %o) = @_;

    # a whole configuration of the test's own (it listens on $self->port)
    return $o{conf} if defined $o{conf};

    my $dir = $self->{dir};

    return <<"CONF";
load_module $MODULE;
@{[ $self->main_conf(workers => $o{workers} // 2) ]}
worker_shutdown_timeout @{[ $o{shutdown_timeout} // '30s' ]};

events { worker_connections 2048; }

http {
@{[ $self->http_paths ]}
    chatbridge_sidecar $dir/sidecar.sock;

    @{[ $o{http} // '' ]}

    server {
        listen 127.0.0.1:$self->{port} @{[ $o{listen} // '' ]};

        location /v1/ {
            chatbridge;
            @{[ $o{location} // '' ]}
        }

        location = /chatbridge/ws {
            proxy_pass http://unix:$dir/ws.sock:;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_buffering off;
        }

        location = /chatbridge/status {
            chatbridge_status;
        }

        @{[ $o{server} // '' ]}
    }
}
CONF
}

# One of nginx-conf/'s examples, made runnable here: the paths it names
# (/etc/chatbridge, /var/log/nginx, /run, the certificate ...) point into
# this test's directory, where example_files() put what they need, and
# %{ $o{replace} } replaces addresses (literal text => new text).
sub example_conf {
    my ($self, $name, %o) = @_;

    my $dir = $self->{dir};
    my $text = do { local (@ARGV, $/) = ("$TOP/nginx-conf/$name"); <> };
    my $user = $> == 0 ? 'user nobody nogroup;' : '';

    $text =~ s{^include /etc/nginx/modules-enabled/\*\.conf;}{load_module $MODULE;}m;
    $text =~ s{^user www-data;}{$user}m;
    $text =~ s{/run/nginx\.pid}{$dir/nginx.pid}g;
    $text =~ s{/run/chatbridge/sidecar\.sock}{$dir/sidecar.sock}g;
    $text =~ s{/var/log/nginx/}{$dir/}g;
    $text =~ s{/etc/chatbridge/nginx/}{$dir/snippets/}g;
    $text =~ s{/etc/chatbridge/}{$dir/etc/}g;
    $text =~ s{/usr/share/chatbridge/}{$BUILD/}g;
    $text =~ s{/etc/letsencrypt/live/bridge\.example\.com/}{$dir/tls/}g;
    $text =~ s{/var/www/acme}{$dir/acme}g;

    # a container may allow fewer open files than a server
    my $hard = qx{sh -c 'ulimit -Hn'};
    chomp $hard;
    if ($hard =~ /^\d+$/) {
        $text =~ s{worker_rlimit_nofile (\d+);}
                  {"worker_rlimit_nofile " . ($hard < $1 ? $hard : $1) . ";"}ge;
    }
    $text =~ s{^\s*listen \[::\].*\n}{}mg;           # no IPv6 here
    my $temp = join '', map { "    ${_}_temp_path $dir/tmp/$_;\n" }
                            qw(client_body proxy fastcgi uwsgi scgi);
    $text =~ s/^http \x7b\n/http \x7b\n$temp/m;
    # in the foreground, so that the harness has its pid and stops it
    $text =~ s{^pid }{daemon off;\nlock_file $dir/nginx.lock;\npid }m;

    for my $from (sort keys %{ $o{replace} // {} }) {
        my $n = $text =~ s{\Q$from\E}{$o{replace}{$from}}g;
        die "$name has no \"$from\"" unless $n;
    }

    return $text;
}

# what the examples read: keys, the browser token, the snippets (the
# WebSocket one pointing at this test's sidecar), a certificate for
# bridge.example.com and 127.0.0.1 made now; %o: client_key, admin_key
sub example_files {
    my ($self, %o) = @_;

    my $dir = $self->{dir};
    mkdir "$dir/$_" for qw(etc snippets tls acme);

    my %files = (
        'etc/clients.keys' => "app $o{client_key}\n",
        'etc/admin.keys' => "ops $o{admin_key}\n",
        'etc/browser-token' => "$self->{token}\n",
        'etc/llm.keys' => "one sk-upstream-one-000000\n",
    );

    for my $f (keys %files) {
        open my $fh, '>', "$dir/$f" or die "$dir/$f: $!";
        print $fh $files{$f};
        close $fh;
    }

    opendir my $dh, "$TOP/nginx-conf" or die;
    for my $f (grep { /\.conf$/ } readdir $dh) {
        my $text = do { local (@ARGV, $/) = ("$TOP/nginx-conf/$f"); <> };
        $text =~ s{proxy_pass http://127\.0\.0\.1:5103;}
                  {proxy_pass http://unix:$dir/ws.sock:;}g;
        open my $fh, '>', "$dir/snippets/$f" or die;
        print $fh $text;
        close $fh;
    }
    closedir $dh;

    my $out = qx{openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \\
        -keyout $dir/tls/privkey.pem -out $dir/tls/fullchain.pem \\
        -subj /CN=bridge.example.com \\
        -addext subjectAltName=DNS:bridge.example.com,IP:127.0.0.1 2>&1};
    $? == 0 or die "openssl could not make a certificate: $out";
}

# the mock LLM upstream (t/lib/mock-llm.mjs): returns its port
sub start_mock_llm {
    my ($self, @args) = @_;

    # it binds port 0 and prints "listening PORT" first: no race for a port
    my $n = ++$self->{mocks};
    my $log = "$self->{dir}/mock-llm" . ($n > 1 ? "-$n" : '') . '.log';
    $self->spawn('mock-llm', $log, 'node', "$TOP/t/lib/mock-llm.mjs",
                 '--port', 0, @args);

    my $port;
    wait_for(sub { ($port) = $self->log($log) =~ /^listening (\d+)$/m;
                   $port }, 10)
        or die "the mock LLM did not start:\n" . $self->log($log);

    return $port;
}

# nginx -s reload; returns once the new workers run (and have linked to
# the sidecar, if there is one) and every old worker has gone or is
# shutting down: from then on, new connections reach the new workers.  An
# old worker may live on while a proxied WebSocket (a browser) holds it,
# up to worker_shutdown_timeout.
sub reload_nginx {
    my ($self) = @_;
    my %old = map { $_ => 1 } $self->worker_pids;
    kill 'HUP', $self->{nginx};

    my @new;
    wait_for(sub {
        my @w = $self->worker_pids;
        @new = grep { !$old{$_} } @w;
        return 0 unless @new >= $self->{workers};
        for my $pid (grep { $old{$_} } @w) {
            open my $fh, '<', "/proc/$pid/cmdline" or next;
            return 0 unless (<$fh> // '') =~ /shutting down/;
        }
        return 1;
    }, 10) or die "nginx did not replace its workers after a reload:\n"
                  . $self->log('error');

    # linked: the sidecar gave each a worker entry, which status lists
    return unless $self->{sidecar} && $self->{linked};
    wait_for(sub {
        my %in = map { $_->{pid} => 1 } @{ $self->status->{workers} // [] };
        !grep { !$in{$_} } @new;
    }, 10) or die "the new workers did not link to the sidecar:\n"
                  . $self->log('error');
}

# a graceful stop, bounded: QUIT, then KILL after 10 s
sub stop_nginx {
    my ($self) = @_;
    my $pid = $self->{nginx} or return;
    kill 'QUIT', $pid;
    if (!reap($pid, 10)) {
        # workers outlive a killed master: they go first
        kill 'KILL', $self->worker_pids, $pid;
        waitpid $pid, 0;
    }
    delete $self->{nginx};
    delete $self->{pids}{$pid};
}

# waitpid with a deadline: true once $pid has exited
sub reap {
    my ($pid, $timeout) = @_;
    return wait_for(sub { waitpid($pid, WNOHANG) != 0 }, $timeout);
}

# a scripted browser (t/lib/fake-browser.mjs); returns its pid.  It comes
# through nginx, as a real one does, unless the first argument is 'direct'
# (then it connects to the sidecar's socket).
sub start_browser {
    my ($self, @args) = @_;

    my $url = "ws://127.0.0.1:$self->{port}/chatbridge/ws";
    if (@args && $args[0] eq 'direct') {
        shift @args;
        $url = "ws+unix://$self->{dir}/ws.sock:/chatbridge/ws";
    }

    my $n = @{ $self->{browsers} } + 1;
    my $log = "$self->{dir}/browser$n.log";
    my $pid = $self->spawn("browser$n", "$self->{dir}/browser$n.out", 'node',
                           "$TOP/t/lib/fake-browser.mjs",
                           '--url', $url,
                           '--token', $self->{token}, '--log', $log, @args);
    push @{ $self->{browsers} }, { pid => $pid, log => $log };
    return $pid;
}

sub stop_browser {
    my ($self, $pid, $signal) = @_;
    kill $signal // 'TERM', $pid;
    reap($pid, 10) or do { kill 'KILL', $pid; waitpid $pid, 0 };
    delete $self->{pids}{$pid};
}

# wait until the sidecar reports n ready browsers: true if it did; called
# for its effect alone (void context), a timeout ends the test file
sub wait_browsers {
    my ($self, $n, $timeout) = @_;
    my $ok = wait_for(sub {
        my @b = grep { $_->{state} eq 'ready' }
                @{ $self->status->{browsers} // [] };
        @b >= $n;
    }, $timeout // 10);
    die "fewer than $n browsers became ready\n" . $self->log('sidecar')
        if !$ok && !defined wantarray;
    return $ok;
}

# wait until the sidecar holds nothing for any request: no slot, no chunk,
# no active request, no browser place; true if it came to that
sub wait_idle {
    my ($self, $timeout) = @_;
    return wait_for(sub {
        my $s = $self->status;
        ($s->{shm}{slots}{in_use} // -1) == 0
        && ($s->{shm}{chunks}{in_use} // -1) == 0
        && ($s->{requests}{active} // -1) == 0
        && !grep { ($_->{inflight} // -1) != 0 } @{ $s->{browsers} // [] };
    }, $timeout // 5);
}

sub status {
    my ($self) = @_;
    my $r = HTTP::Tiny->new(timeout => 5)->get($self->url('/chatbridge/status'));
    return {} unless $r->{success};
    return eval { $json->decode($r->{content}) } // {};
}

# the events every scripted browser logged, in time order
sub events {
    my ($self, $event) = @_;
    my @all;
    for my $b (@{ $self->{browsers} }) {
        open my $fh, '<', $b->{log} or next;
        while (<$fh>) {
            my $e = eval { $json->decode($_) } or next;
            push @all, $e;
        }
    }
    @all = sort { $a->{t} <=> $b->{t} } @all;
    return defined $event ? grep { $_->{event} eq $event } @all : @all;
}

sub http {
    my ($self, $method, $path, $body, $headers) = @_;
    my %h = (%{ $headers // {} });
    $h{'Content-Type'} //= 'application/json' if defined $body;
    return HTTP::Tiny->new(timeout => 30)->request($method, $self->url($path), {
        headers => \%h,
        defined $body ? (content => ref $body ? $json->encode($body) : $body)
                      : (),
    });
}

sub decode { eval { $json->decode($_[1]) } }
sub encode { $json->encode($_[1]) }

# A request over a plain socket, read as it arrives: returns the status,
# headers and every SSE event with the time it arrived.  %o: close_after =>
# N events then hang up; timeout => seconds; on_event => sub.
sub raw {
    my ($self, $method, $path, $body, %o) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $self->{port}, Timeout => 5)
        or die "connect: $!";
    my $payload = ref $body ? $json->encode($body) : ($body // '');
    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
              . "Connection: close\r\n"
              . join('', map { "$_: $o{headers}{$_}\r\n" }
                         keys %{ $o{headers} // {} })
              . (length $payload ? "Content-Type: application/json\r\n"
                                   . "Content-Length: " . length($payload)
                                   . "\r\n" : '')
              . "\r\n" . $payload;
    $s->syswrite($req);

    my $start = time;
    my $deadline = $start + ($o{timeout} // 30);
    my $sel = IO::Select->new($s);
    my ($buf, $head, %res) = ('');
    $res{events} = [];
    my $body_raw = '';
    my $chunked;

    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = $s->sysread(my $chunk, 65536);
        last unless $n;
        $buf .= $chunk;

        if (!defined $head) {
            my $i = index $buf, "\r\n\r\n";
            next if $i < 0;
            $head = substr $buf, 0, $i;
            $buf = substr $buf, $i + 4;
            my @lines = split /\r\n/, $head;
            ($res{status}) = (shift(@lines) =~ m{^HTTP/\S+ (\d+)});
            for (@lines) {
                my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
                $res{headers}{lc $k} = $v;
            }
            $chunked = ($res{headers}{'transfer-encoding'} // '') =~ /chunked/;
        }

        # de-chunk what we have
        if ($chunked) {
            while ($buf =~ /^([0-9a-fA-F]+)\r\n/) {
                my $len = hex $1;
                my $hl = length($1) + 2;
                last if length($buf) < $hl + $len + 2;
                $body_raw .= substr $buf, $hl, $len;
                $buf = substr $buf, $hl + $len + 2;
                if ($len == 0) { $deadline = 0; last }
            }
        } else {
            $body_raw .= $buf;
            $buf = '';
        }

        while ($body_raw =~ s/^(.*?)\n\n//s) {
            my $ev = $1;
            push @{ $res{events} }, { at => time - $start, text => $ev };
            $o{on_event}->($ev, $s) if $o{on_event};
            if ($o{close_after} && @{ $res{events} } >= $o{close_after}) {
                close $s;
                $res{closed} = 1;
                return \%res;
            }
        }
    }

    $res{body} = $body_raw;
    $res{elapsed} = time - $start;
    close $s;
    return \%res;
}

# data: payloads of SSE events, decoded where they are JSON
sub sse_data {
    my ($self, $res) = @_;
    my @out;
    for my $e (@{ $res->{events} }) {
        next unless $e->{text} =~ /^data: (.*)$/s;
        my $d = $1;
        push @out, $d eq '[DONE]' ? '[DONE]' : ($json->decode($d));
    }
    return @out;
}

# the text of a streamed answer
sub sse_text {
    my ($self, $res) = @_;
    return join '', map { ref $_ && $_->{choices} && @{ $_->{choices} }
                          ? ($_->{choices}[0]{delta}{content} // '') : '' }
                    $self->sse_data($res);
}

# many requests at once over plain sockets; returns responses in order
sub concurrent {
    my ($self, @bodies) = @_;

    my (@conns, @res);
    for my $i (0 .. $#bodies) {
        my $payload = $json->encode($bodies[$i]);
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $self->{port},
                                      Blocking => 1, Timeout => 5)
            or die "connect: $!";
        $s->syswrite("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     . "Connection: close\r\nContent-Type: application/json\r\n"
                     . "Content-Length: " . length($payload) . "\r\n\r\n"
                     . $payload);
        push @conns, { s => $s, buf => '', i => $i };
    }

    my $sel = IO::Select->new(map { $_->{s} } @conns);
    my %by = map { fileno($_->{s}) => $_ } @conns;
    my $deadline = time + 60;

    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(1)) {
            my $c = $by{fileno $s};
            my $n = $s->sysread(my $chunk, 65536);
            if ($n) {
                $c->{buf} .= $chunk;
                next;
            }
            $sel->remove($s);
            close $s;
            my ($head, $body) = split /\r\n\r\n/, $c->{buf}, 2;
            my ($status) = ($head // '') =~ m{^HTTP/\S+ (\d+)};
            $body = dechunk($body // '') if ($head // '') =~ /chunked/i;
            $res[$c->{i}] = { status => $status, body => $body };
        }
    }

    return @res;
}

sub dechunk {
    my ($raw) = @_;
    my $out = '';
    while ($raw =~ s/^([0-9a-fA-F]+)\r\n//) {
        my $len = hex $1;
        last if $len == 0;
        $out .= substr $raw, 0, $len;
        $raw = substr $raw, $len + 2;
    }
    return $out;
}

# the answer text of an SSE body
sub sse_body_text {
    my ($self, $body) = @_;
    my $text = '';
    for my $ev (split /\n\n/, $body) {
        next unless $ev =~ /^data: (\{.*\})$/s;
        my $d = $json->decode($1);
        $text .= $d->{choices}[0]{delta}{content} // ''
            if $d->{choices} && @{ $d->{choices} };
    }
    return $text;
}

sub log {
    my ($self, $name) = @_;
    my $file = $name =~ m{/} ? $name : "$self->{dir}/$name"
                                       . ($name =~ /\./ ? '' : '.log');
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh>;
}

sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return $cond->() ? 1 : 0;
}

# lines a test causes on purpose (a worker killed with -9) can be excused
sub expect_alert {
    my ($self, $re) = @_;
    push @{ $self->{expected} }, $re;
}

sub error_log_clean {
    my ($self) = @_;
    my @bad = grep { /\[(alert|crit|emerg)\]/ } split /\n/, $self->log('error');
    for my $re (@{ $self->{expected} // [] }) {
        @bad = grep { $_ !~ $re } @bad;
    }
    is(scalar(@bad), 0, 'no alert, crit or emerg in the error log')
        or diag(join "\n", @bad);
}

sub stop {
    my ($self) = @_;

    # a forked client must not tear down what its parent runs
    return if $$ != $self->{owner};
    return if $self->{stopped}++;

    # browsers first (a proxied WebSocket would hold an exiting nginx
    # worker), then nginx (graceful), then the sidecar
    for my $b (@{ $self->{browsers} }) {
        kill 'TERM', $b->{pid} if $self->{pids}{ $b->{pid} };
    }
    for my $b (@{ $self->{browsers} }) {
        if ($self->{pids}{ $b->{pid} }) {
            reap($b->{pid}, 5)
                or do { kill 'KILL', $b->{pid}; waitpid $b->{pid}, 0 };
            delete $self->{pids}{ $b->{pid} };
        }
    }

    $self->stop_nginx;

    for my $pid (keys %{ $self->{pids} }) {
        kill 'TERM', $pid;
    }
    my $deadline = time + 5;
    while (%{ $self->{pids} } && time < $deadline) {
        for my $pid (keys %{ $self->{pids} }) {
            delete $self->{pids}{$pid} if waitpid($pid, WNOHANG) != 0;
        }
        sleep 0.05;
    }
    for my $pid (keys %{ $self->{pids} }) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    $self->{pids} = {};
}

sub done {
    my ($self) = @_;
    $self->stop;
    $self->error_log_clean;
    if (!Test::More->builder->is_passing) {
        diag("--- error.log tail ---\n" . tail($self->log('error'), 30));
        diag("--- sidecar.log tail ---\n" . tail($self->log('sidecar'), 30));
    }
}

sub tail {
    my ($text, $n) = @_;
    my @l = split /\n/, $text;
    return join "\n", @l[($#l - $n + 1 < 0 ? 0 : $#l - $n + 1) .. $#l];
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $@);
    $self->stop;
}

1;
