# A public TLS host, with the shipped nginx-conf/public-tls.conf and a
# certificate made now: the official openai SDK over https and a browser
# over wss go through nginx end to end; HTTP/2 for clients; HSTS; http
# redirects to https; the keys, the userscript with this host's wss:// URL,
# and the status behind the admin keys.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use HTTP::Tiny;
use MIME::Base64 qw(encode_base64);
use Test::More;

my $t = ChatBridgeTest->new;
my $dir = $t->dir;
my $client = 'sk-client-0123456789';
my $admin = 'sk-admin-0123456789abcdef';
my $http_port = ChatBridgeTest::free_port();
my $port = $t->port;

$t->example_files(client_key => $client, admin_key => $admin);
$t->start_sidecar;
$t->start_nginx(tls => 1, conf => $t->example_conf('public-tls.conf', replace => {
    'listen 443 ssl http2;' => "listen 127.0.0.1:$port ssl http2;",
    'listen 80;' => "listen 127.0.0.1:$http_port;" }));

my $ca = "$dir/tls/fullchain.pem";
my $https = "https://127.0.0.1:$port";
my $ua = HTTP::Tiny->new(timeout => 30, verify_SSL => 1,
                         SSL_options => { SSL_ca_file => $ca });

# --- a browser over wss, with the token of /etc/chatbridge/browser-token

{
    local $ENV{NODE_EXTRA_CA_CERTS} = $ca;
    my $log = "$dir/browser-wss.log";
    my $pid = $t->spawn('browser', "$dir/browser-wss.out", 'node',
                        "$ChatBridgeTest::TOP/t/lib/fake-browser.mjs",
                        '--url', "wss://127.0.0.1:$port/chatbridge/ws",
                        '--token', $t->token, '--log', $log, '--id', 'tab-wss');
    push @{ $t->{browsers} }, { pid => $pid, log => $log };
}

my $status;
ok(ChatBridgeTest::wait_for(sub {
       my $r = $ua->get("$https/chatbridge/status",
                        { headers => { Authorization => "Bearer $admin" } });
       $status = $t->decode($r->{content}) // {};
       grep { ($_->{id} // '') eq 'tab-wss' && $_->{state} eq 'ready' }
            @{ $status->{browsers} // [] } }, 10),
   'a browser connected over wss (seen on the status, with the admin key)');
is($status->{link}, 'ready', 'nginx is linked to the sidecar');

# --- the official openai SDK over https

sub sdk {
    my (@args) = @_;
    local $ENV{NODE_EXTRA_CA_CERTS} = $ca;
    local $ENV{NODE_PATH} = "$ChatBridgeTest::TOP/t/node_modules";
    my $out = qx{node $ChatBridgeTest::TOP/t/lib/openai-client.mjs @args 2>&1};
    return $t->decode($out) // { error => $out };
}

my $r = sdk('--base', "$https/v1", '--key', $client, '--model', 'gpt-x',
            '--prompt', "'hello over tls'");
is($r->{text}, 'echo: hello over tls', 'the SDK over https: an answer') or diag(explain $r);
is($r->{finish}, 'stop', 'finished');

$r = sdk('--base', "$https/v1", '--key', $client, '--model', 'gpt-x',
         '--prompt', "'streamed over tls'", '--stream');
is($r->{text}, 'echo: streamed over tls', 'and streaming') or diag(explain $r);

$r = sdk('--base', "$https/v1", '--key', 'sk-wrong-key-0000', '--model', 'gpt-x',
         '--prompt', 'x');
is($r->{status}, 401, 'a wrong client key: 401 through the SDK');

# --- HTTP/2 for clients, streaming as it comes

my $h2 = qx{curl -s --http2 --cacert $ca -o /dev/null -w '%{http_version} %{http_code}' \\
            -H 'Authorization: Bearer $client' $https/v1/models};
is($h2, '2 200', 'HTTP/2 for clients');
my $sse = qx{curl -s -N --http2 --cacert $ca -H 'Authorization: Bearer $client' \\
             -H 'Content-Type: application/json' \\
             -d '{"model":"m","stream":true,"messages":[{"role":"user","content":"h2 stream"}]}' \\
             $https/v1/chat/completions};
is($t->sse_body_text($sse), 'echo: h2 stream', 'a stream over HTTP/2');
like($sse, qr/data: \[DONE\]\n\n\z/, 'to its end');

# --- HSTS, the redirect, no server version

$r = $ua->get("$https/v1/models", { headers => { Authorization => "Bearer $client" } });
like($r->{headers}{'strict-transport-security'}, qr/max-age=63072000/, 'HSTS');
unlike($r->{headers}{server} // '', qr/\d/, 'no nginx version in Server');
$r = HTTP::Tiny->new(max_redirect => 0)->get("http://127.0.0.1:$http_port/v1/models");
is($r->{status}, 301, 'http redirects');
like($r->{headers}{location}, qr{^https://127\.0\.0\.1(:\d+)?/v1/models$}, 'to https');

# --- the userscript: behind the admin keys, with this host's wss:// URL

is($ua->get("$https/chatbridge/chatbridge.user.js")->{status}, 401,
   'the userscript needs an admin key');
$r = $ua->get("$https/chatbridge/chatbridge.user.js", { headers => {
        Authorization => 'Basic ' . encode_base64("me:$admin", '') } });
is($r->{status}, 200, 'given as the password of the prompt');
like($r->{content}, qr{wss://127\.0\.0\.1:$port/chatbridge/ws}, 'with the wss:// URL of this host');
like($r->{content}, qr{\Q${\ $t->token }\E}, 'and the browser token');

# --- status and metrics behind the admin keys; health open

is($ua->get("$https/chatbridge/status")->{status}, 401, 'status needs an admin key');
is($ua->get("$https/chatbridge/metrics")->{status}, 401, 'metrics too');
is($ua->get("$https/chatbridge/metrics", { headers => { Authorization => "Bearer $admin" } })->{status},
   200, 'with it, metrics');
is($ua->get("$https/chatbridge/health")->{status}, 200, 'the health check is open');

$t->done;
done_testing;
