# Status and metrics: chatbridge_status answers JSON (browsers with id,
# kind, state, in flight, served and errors; the queue; totals; shared
# memory), the HTML page to a browser, Prometheus text at .../metrics, and a
# health check at .../health (200 while a browser has room, 503 otherwise).
# With an admin key configured, all but the health check need it, as a
# Bearer token or as HTTP Basic auth's password.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use MIME::Base64 qw(encode_base64);
use Test::More;
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
my $admin = 'sk-admin-status-0123456789';

$t->start_sidecar('--per-browser', '2');
$t->start_nginx(server => "
    location ~ ^/chatbridge/(metrics|health)\$ { chatbridge_status; }
    location /ops/ {
        chatbridge_status;
        chatbridge_admin_key ops $admin;
    }");

sub get {
    my ($path, %h) = @_;
    return $t->http(GET => $path, undef, \%h);
}

# --- no browser: health says 503, the rest works

my $r = get('/chatbridge/health');
is($r->{status}, 503, 'no browser: health 503');
ok($r->{headers}{'retry-after'}, 'with Retry-After');
my $h = $t->decode($r->{content});
is_deeply([ @$h{qw(status link browsers free)} ], [ 'unavailable', 'ready', 0, 0 ],
          'saying why') or diag($r->{content});

$r = get('/chatbridge/metrics');
is($r->{status}, 200, 'metrics');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'as Prometheus text');
like($r->{content}, qr/^chatbridge_up 1$/m, 'linked');

# --- a browser; a request in flight

$t->start_browser('--concurrency', '2', '--id', 'tab-1', '--kind', 'arena');
$t->wait_browsers(1);

$r = get('/chatbridge/health');
is($r->{status}, 200, 'a browser with room: health 200');
$h = $t->decode($r->{content});
is($h->{free}, 2, 'room for two') or diag($r->{content});

my @slow = map {
    my $pid = fork();
    if ($pid == 0) {
        $t->http(POST => '/v1/chat/completions', { model => 'm', stream => \1,
                 messages => [{ role => 'user', content => "slow $_ [[delay 3000]]" }] });
        exit 0;
    }
    $pid;
} 1 .. 2;

ok(ChatBridgeTest::wait_for(sub {
       my $s = $t->status;
       ($s->{browsers}[0]{inflight} // 0) == 2 }, 5), 'two requests in flight');

$r = get('/chatbridge/status');
is($r->{status}, 200, 'status');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON for a program');
my $s = $t->decode($r->{content});
my $b = $s->{browsers}[0];
is_deeply([ @$b{qw(id kind state inflight capacity)} ], [ 'tab-1', 'arena', 'ready', 2, 2 ],
          'the browser: id, kind, state, in flight, capacity') or diag($r->{content});
ok(exists $b->{served} && exists $b->{errors}, 'served and errors');
ok(exists $s->{queue}{length} && exists $s->{queue}{max}, 'the queue');
ok(exists $s->{totals}{dispatched}, 'totals');
ok($s->{shm}{slots}{in_use} >= 2 && $s->{shm}{slots}{total} > 0, 'shared memory in use');
is($s->{requests}{active}, 2, 'requests active');

$r = get('/chatbridge/health');
is($r->{status}, 503, 'the only browser is full: health 503');
is($t->decode($r->{content})->{free}, 0, 'no room');

$r = get('/chatbridge/metrics');
my $m = $r->{content};
like($m, qr/^chatbridge_browsers\{kind="arena",state="ready"\} 1$/m, 'browsers by kind and state');
like($m, qr/^chatbridge_browser_inflight\{id="tab-1",kind="arena"\} 2$/m, 'in flight per browser');
like($m, qr/^chatbridge_requests_active 2$/m, 'requests active');
like($m, qr/^chatbridge_shm_slots\{use="in_use"\} [1-9]\d*$/m, 'slots in use');
like($m, qr/^chatbridge_worker_requests_total\{pid="\d+"\} \d+$/m, 'per worker');

# every sample belongs to a metric with HELP and TYPE, declared once
my (%type, %help, $bad);
for my $line (split /\n/, $m) {
    if ($line =~ /^# TYPE (\S+) (counter|gauge)$/) {
        $bad++ if $type{$1};
        $type{$1} = $2;
        next;
    }
    if ($line =~ /^# HELP (\S+) \S/) { $help{$1}++; next }
    if ($line =~ /^([a-z_]+)(?:\{(?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*\})? -?[\d.]+$/) {
        my $name = $1;
        $bad++ unless $type{$name} && $help{$name};
        $bad++ if ($name =~ /_total$/) != (($type{$name} // '') eq 'counter');
        next;
    }
    $bad++;
    diag("not Prometheus text: $line");
}
ok(!$bad, 'the whole answer is valid Prometheus text');

waitpid $_, 0 for @slow;

ok(ChatBridgeTest::wait_for(sub {
       get('/chatbridge/health')->{status} == 200 }, 5), 'room again: health 200');
$r = get('/chatbridge/metrics');
like($r->{content}, qr/^chatbridge_browser_served_total\{id="tab-1",kind="arena"\} 2$/m,
     'two served');

# --- the HTML page for a browser

$r = get('/chatbridge/status', Accept => 'text/html,application/xhtml+xml;q=0.9');
is($r->{status}, 200, 'the status page');
like($r->{headers}{'content-type'}, qr{^text/html}, 'as HTML');
like($r->{content}, qr/<title>chatbridge status<\/title>/, 'the page');
like($r->{content}, qr/setTimeout\(refresh, 2000\)/, 'that refreshes itself');
like($r->{headers}{'content-security-policy'}, qr/default-src 'none'/,
     'under a strict Content-Security-Policy');
$r = get('/chatbridge/status?format=json', Accept => 'text/html');
like($r->{headers}{'content-type'}, qr{^application/json}, '?format=json wins');
$r = get('/chatbridge/status?format=html');
like($r->{headers}{'content-type'}, qr{^text/html}, '?format=html too');

$r = $t->http(POST => '/chatbridge/status', '{}');
is($r->{status}, 405, 'POST: 405');
is($t->decode($r->{content})->{error}{code}, 'method_not_allowed', 'as JSON');

# --- behind an admin key

for my $p (qw(/ops/status /ops/metrics)) {
    $r = get($p);
    is($r->{status}, 401, "$p without the key: 401");
    is($t->decode($r->{content})->{error}{code}, 'invalid_admin_key', 'as JSON');
    is(get($p, Authorization => "Bearer $admin")->{status}, 200, 'with it: 200');
}
$r = get('/ops/status', Accept => 'text/html');
is($r->{status}, 401, 'the page without the key: 401');
like($r->{headers}{'www-authenticate'}, qr/^Basic realm="chatbridge status"/,
     'a Basic challenge, so the browser asks');
my $basic = 'Basic ' . encode_base64("me:$admin", '');
$r = get('/ops/status', Accept => 'text/html', Authorization => $basic);
is($r->{status}, 200, 'with the key as the password: the page');
is(get('/ops/status?format=json', Authorization => $basic)->{status}, 200,
   'and its JSON');
is(get('/ops/status', Authorization => 'Basic ' . encode_base64("me:wrong-key-000", ''))->{status},
   401, 'a wrong password: 401');
is(get('/ops/health')->{status}, 200, 'the health check needs no key');

# --- the sidecar goes away: health 503, metrics say so

$t->kill_sidecar('KILL');
ok(ChatBridgeTest::wait_for(sub { get('/chatbridge/health')->{status} == 503 }, 5),
   'no sidecar: health 503');
is($t->decode(get('/chatbridge/health')->{content})->{link}, 'down', 'link down');
like(get('/chatbridge/metrics')->{content}, qr/^chatbridge_up 0$/m, 'chatbridge_up 0');

$t->done;
done_testing;
