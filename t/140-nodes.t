# Several bridge nodes behind a front nginx, on loopback, with the shipped
# nginx-conf/node.conf (twice) and nginx-conf/front.conf (TLS, a certificate
# made now).  A node with no browser costs no failed request: the front
# retries its 503 on the other node.  Killing a node's sidecar fails no
# request that had not started streaming: the node answers 502 before the
# first byte and the front retries.  Browsers reach their node through the
# front over wss; the nodes' status and metrics do not reach the front's
# clients by any path.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use HTTP::Tiny;
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);

my $client_key = 'sk-client-0123456789';
my $admin_key = 'sk-admin-0123456789abcdef';

my ($a, $b, $front) = map { ChatBridgeTest->new } 1 .. 3;
$_->example_files(client_key => $client_key, admin_key => $admin_key)
    for $a, $b, $front;

# the two nodes: the same token, as with the packaged sidecar on each
$b->{token} = $a->{token};
for my $n ($a, $b) {
    $n->start_sidecar;
    $n->start_nginx(conf => $n->example_conf('node.conf',
        replace => { '10.0.0.11:8080' => '127.0.0.1:' . $n->port }));
}

my $ca = $front->dir . '/tls/fullchain.pem';
$front->start_nginx(conf => $front->example_conf('front.conf', replace => {
    'listen 443 ssl http2;' => 'listen 127.0.0.1:' . $front->port . ' ssl http2;',
    '10.0.0.11:8080' => '127.0.0.1:' . $a->port,
    '10.0.0.12:8080' => '127.0.0.1:' . $b->port }));

my $https = 'https://127.0.0.1:' . $front->port;

# node A's browser connects through the front, over wss
sub browser_via_front {
    my ($node, $n, @args) = @_;
    local $ENV{NODE_EXTRA_CA_CERTS} = $ca;
    my $log = $node->dir . "/browser-front.log";
    my $pid = $node->spawn('browser', $node->dir . '/browser-front.out', 'node',
                           "$ChatBridgeTest::TOP/t/lib/fake-browser.mjs",
                           '--url', "wss://127.0.0.1:${\ $front->port }/nodes/$n/chatbridge/ws",
                           '--token', $node->token, '--log', $log, @args);
    push @{ $node->{browsers} }, { pid => $pid, log => $log };
    return $pid;
}

browser_via_front($a, 1, '--id', 'tab-a', '--concurrency', '16');
ok($a->wait_browsers(1), "node A's tab connected through the front (wss)");

sub ua { HTTP::Tiny->new(timeout => 30, verify_SSL => 1,
                         SSL_options => { SSL_ca_file => $ca }) }

# --- the nodes' status and metrics stay on their private network: the
#     nodes allow it, and the front's own requests come from there

like(HTTP::Tiny->new(timeout => 5)->get($a->url('/chatbridge/metrics'))->{content},
     qr/^chatbridge_up 1$/m, 'node A serves its metrics to its own network');
for my $path ('/nodes/1/chatbridge/status', '/nodes/1/chatbridge/metrics',
              '/nodes/2/chatbridge/status?format=json',
              '/chatbridge/status', '/chatbridge/metrics',
              '/nodes/1//chatbridge/status', '/nodes/1/chatbridge%2Fmetrics',
              '/chatbridge%2fstatus', '/nodes/1/x/../chatbridge/status') {
    my $r = ua()->get("$https$path", { headers => {
                          Authorization => "Bearer $admin_key" } });
    is($r->{status}, 403, "the front does not pass on $path");
    unlike($r->{content}, qr/chatbridge_up|"browsers"/, 'nor any of it');
}
my $health = ua()->get("$https/nodes/1/chatbridge/health");
is($health->{status}, 200, "a node's health is passed on");
like($health->{content}, qr/"status":"ok"/, 'with its answer');

sub chat {
    my ($text, %o) = @_;
    return ua()->post("$https/v1/chat/completions", {
        headers => { 'Content-Type' => 'application/json',
                     Authorization => "Bearer $client_key" },
        content => $front->encode({ model => 'm', stream => $o{stream} ? \1 : \0,
                   messages => [{ role => 'user', content => $text }] }) });
}

# --- node B has no browser: no request fails

my $fails = 0;
for my $i (1 .. 12) {
    my $r = chat("hello $i");
    $fails++ unless $r->{status} == 200
                    && $r->{content} =~ /"content":"echo: hello $i"/;
}
is($fails, 0, 'twelve requests in a row through the front: all answered');

my @kids = map {
    my $i = $_;
    my $pid = fork();
    if ($pid == 0) {
        my $r = chat("together $i", stream => 1);
        exit($r->{status} == 200
             && $front->sse_body_text($r->{content}) eq "echo: together $i"
             && $r->{content} =~ /data: \[DONE\]\n\n\z/ ? 0 : 1);
    }
    $pid;
} 1 .. 10;
my $bad = 0;
for (@kids) { waitpid $_, 0; $bad++ if $? }
is($bad, 0, 'ten at once, streaming: all answered');

like($b->log('chatbridge'), qr/" 503 .*key=app /,
     'node B was asked and answered 503 (no browser)');
like($front->log('front'), qr/upstream_status=503, 200/,
     "and the front took the 503 to node A");

# --- a browser on node B too; then node A's sidecar dies mid-wait

$b->start_browser('--id', 'tab-b', '--concurrency', '16');
ok($b->wait_browsers(1), "node B's tab connected");

my $t0 = time;
@kids = map {
    my $i = $_;
    my $pid = fork();
    if ($pid == 0) {
        my $r = chat("waiting $i [[delay 1500]]", stream => 1);
        my $ok = $r->{status} == 200
                 && $front->sse_body_text($r->{content}) eq "echo: waiting $i"
                 && $r->{content} !~ /"error"/;
        print STDERR "# waiting $i: $r->{status} "
            . substr($r->{content}, 0, 300) . "\n" unless $ok;
        exit($ok ? 0 : 1);
    }
    $pid;
} 1 .. 12;

# every request is with a browser (waiting for its first token) on A or B
ok(ChatBridgeTest::wait_for(sub {
       ($a->status->{requests}{active} // 0) + ($b->status->{requests}{active} // 0) >= 12
   }, 5), 'twelve requests waiting for their first token on both nodes');
my $on_a = $a->status->{requests}{active} // 0;
ok($on_a >= 1, "$on_a of them on node A");

$a->kill_sidecar('KILL');

$bad = 0;
for (@kids) { waitpid $_, 0; $bad++ if $? }
is($bad, 0, "node A's sidecar killed: none of the twelve failed");
ok(time - $t0 < 20, 'and all were answered in time');

# and afterwards too, while node A has no sidecar
$fails = 0;
for my $i (1 .. 6) {
    my $r = chat("after $i");
    $fails++ unless $r->{status} == 200;
}
is($fails, 0, 'requests after the kill: all answered (by node B)');
like($a->log('chatbridge'), qr/" 502 .*outcome=bridge_down/,
     'node A answered 502 before the first byte');

$_->done for $a, $b, $front;
done_testing;
