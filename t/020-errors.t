# Every error is an OpenAI error object with the right status: bad input,
# keys, unknown paths and methods, sizes, no sidecar, no browser, a silent
# browser, the browser's own errors (before and after the stream started),
# and the error pages nginx itself makes in a chatbridge location.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time);

sub error_ok {
    my ($t, $r, $status, $code, $name) = @_;
    is($r->{status}, $status, "$name: $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: JSON");
    my $j = $t->decode($r->{content} // $r->{body} // '');
    ok($j && $j->{error} && defined $j->{error}{message}
       && length $j->{error}{message}, "$name: an error object with a message")
        or diag($r->{content});
    is($j->{error}{code}, $code, "$name: code $code") if defined $code;
    ok(exists $j->{error}{type}, "$name: a type");
    return $j;
}

my $t = ChatBridgeTest->new;
$t->start_sidecar;
$t->start_nginx(
    http => 'limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;',
    location => 'chatbridge_api_key alice sk-alice-0123456789;
                 chatbridge_api_key bob   sk-bob-0123456789;
                 chatbridge_max_body_size 4k;
                 chatbridge_idle_timeout 1s;
                 chatbridge_keepalive 10s;',
    server => 'location /limited/ { chatbridge; limit_req zone=one;
                   limit_req_status 429; }
               location /gate/ { chatbridge;
                   if ($arg_code = 503) { return 503; }
                   if ($arg_code = 504) { return 504; } }');
$t->start_browser;
ok($t->wait_browsers(1), 'browser connected');

my %auth = (Authorization => 'Bearer sk-alice-0123456789');
my $ok_body = { model => 'm', messages => [{ role => 'user', content => 'x' }] };

# --- keys

my $r = $t->http(POST => '/v1/chat/completions', $ok_body);
my $j = error_ok($t, $r, 401, 'invalid_api_key', 'no key');
is($r->{headers}{'www-authenticate'}, 'Bearer', 'WWW-Authenticate: Bearer');
is($j->{error}{type}, 'invalid_request_error',
   'type invalid_request_error, as OpenAI says it');

$r = $t->http(POST => '/v1/chat/completions', $ok_body,
              { Authorization => 'Bearer sk-alice-012345678X' });
error_ok($t, $r, 401, 'invalid_api_key', 'wrong key');

$r = $t->http(GET => '/v1/models');
error_ok($t, $r, 401, 'invalid_api_key', '/v1/models needs the key too');

$r = $t->http(POST => '/v1/chat/completions', $ok_body, \%auth);
is($r->{status}, 200, 'the right key: 200');

$r = $t->http(POST => '/v1/chat/completions', $ok_body,
              { 'x-api-key' => 'sk-bob-0123456789' });
is($r->{status}, 200, 'a key in x-api-key works too');

# --- bad requests

$r = $t->http(POST => '/v1/chat/completions', '{"model": "m", "messages": [',
              \%auth);
$j = error_ok($t, $r, 400, 'invalid_json', 'invalid JSON');
is($j->{error}{type}, 'invalid_request_error', 'type invalid_request_error');

$r = $t->http(POST => '/v1/chat/completions', '[1, 2]', \%auth);
error_ok($t, $r, 400, 'invalid_json', 'not an object');

$r = $t->http(POST => '/v1/chat/completions',
              { messages => [{ role => 'user', content => 'x' }] }, \%auth);
$j = error_ok($t, $r, 400, 'missing_required_parameter', 'no model');
is($j->{error}{param}, 'model', 'param names the field');

$r = $t->http(POST => '/v1/chat/completions', { model => 'm' }, \%auth);
$j = error_ok($t, $r, 400, 'missing_required_parameter', 'no messages');
is($j->{error}{param}, 'messages', 'param messages');

$r = $t->http(POST => '/v1/chat/completions', '', \%auth);
error_ok($t, $r, 400, 'invalid_json', 'empty body');

# --- paths and methods

$r = $t->http(POST => '/v1/chat/completion', $ok_body, \%auth);
error_ok($t, $r, 404, 'unknown_url', 'unknown path');

$r = $t->http(GET => '/v1/chat/completions', undef, \%auth);
error_ok($t, $r, 405, 'method_not_allowed', 'GET chat');
is($r->{headers}{allow}, 'POST', 'Allow: POST');

$r = $t->http(DELETE => '/v1/models', undef, \%auth);
error_ok($t, $r, 405, 'method_not_allowed', 'DELETE models');
is($r->{headers}{allow}, 'GET, HEAD', 'Allow: GET, HEAD');

# --- sizes

$r = $t->http(POST => '/v1/chat/completions',
              { model => 'm', messages => [{ role => 'user',
                                             content => 'x' x 5000 }] },
              \%auth);
error_ok($t, $r, 413, 'request_too_large', 'body over the limit');

# a chunked body has no length to check up front: nginx stops it, and the
# answer is still JSON
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port)
    or die;
my $chunk = 'x' x 3000;
$s->syswrite("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
             . "Authorization: Bearer sk-alice-0123456789\r\n"
             . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             . sprintf("%x\r\n%s\r\n", 3000, $chunk) x 2 . "0\r\n\r\n");
my $raw = '';
while ($s->sysread(my $buf, 65536)) { $raw .= $buf }
my ($head, $body) = split /\r\n\r\n/, $raw, 2;
like($head, qr{^HTTP/1.1 413}, 'chunked body over the limit: 413');
like($head, qr{Content-Type: application/json}i, 'as JSON');
like($body, qr/"code":"request_too_large"/, 'with an OpenAI error object');

# --- the browser's errors

$r = $t->http(POST => '/v1/chat/completions',
              { model => 'm', messages => [{ role => 'user',
                content => 'x [[error rate_limited 429 7]]' }] }, \%auth);
$j = error_ok($t, $r, 429, 'rate_limited', 'the site said 429');
is($r->{headers}{'retry-after'}, '7', 'its Retry-After is passed on');
is($j->{error}{type}, 'rate_limit_error', 'type rate_limit_error');

$r = $t->http(POST => '/v1/chat/completions',
              { model => 'm', messages => [{ role => 'user',
                content => 'x [[error unauthorized 401]]' }] }, \%auth);
error_ok($t, $r, 401, 'unauthorized', 'the site said 401');

$r = $t->http(POST => '/v1/chat/completions',
              { model => 'm', messages => [{ role => 'user',
                content => 'x [[error site_error]]' }] }, \%auth);
error_ok($t, $r, 502, 'site_error', 'a site error with no status: the '
                                    . "code's default");

# after the first byte: an error event, then [DONE]
my $st = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user',
                   content => 'a b c d [[error-after 2 rate_limited 429]]' }] },
    headers => \%auth);
is($st->{status}, 200, 'mid-stream error: the stream had started (200)');
my @d = $t->sse_data($st);
is($d[-1], '[DONE]', 'it still ends with [DONE]');
my ($err) = grep { ref && $_->{error} } @d;
is($err->{error}{code}, 'rate_limited', 'an in-stream error event');
unlike($t->sse_text($st), qr/rate|error/i, 'not disguised as answer text');
is($t->sse_text($st), 'echo: a ', 'the text before the error');

# the same error without streaming keeps its status
$r = $t->http(POST => '/v1/chat/completions',
              { model => 'm', messages => [{ role => 'user',
                content => 'a b c d [[error-after 2 rate_limited 429]]' }] },
              \%auth);
error_ok($t, $r, 429, 'rate_limited', 'mid-answer error, not streaming');

# --- a silent browser: 504 after chatbridge_idle_timeout

my $t0 = time;
$r = $t->http(POST => '/v1/chat/completions',
              { model => 'm', messages => [{ role => 'user',
                content => 'x [[silent]]' }] }, \%auth);
error_ok($t, $r, 504, 'browser_timeout', 'silent browser');
my $waited = time - $t0;
ok($waited >= 0.9 && $waited < 4,
   sprintf('after chatbridge_idle_timeout 1s (%.2f s)', $waited));

$st = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user', content => 'x [[silent]]' }] },
    headers => \%auth);
is($st->{status}, 504, 'silent browser, streaming: 504 before any byte');

# the sidecar told the browser to stop the requests it gave up on
ok(ChatBridgeTest::wait_for(sub { scalar($t->events('cancel')) >= 2 }, 3),
   'the timed-out requests were cancelled in the browser');

# --- nginx's own error pages are JSON here

$r = $t->http(POST => '/limited/chat/completions', $ok_body, \%auth);
$r = $t->http(POST => '/limited/chat/completions', $ok_body, \%auth);
error_ok($t, $r, 429, 'rate_limit_exceeded', 'limit_req rejection');

# any page nginx makes itself in such a location (here "return")
$r = $t->http(POST => '/gate/chat/completions?code=503', $ok_body, \%auth);
error_ok($t, $r, 503, 'service_unavailable', "nginx's own 503");
$r = $t->http(POST => '/gate/chat/completions?code=504', $ok_body, \%auth);
error_ok($t, $r, 504, 'gateway_timeout', "nginx's own 504");

$r = $t->http(OPTIONS => '/v1/chat/completions', undef,
              { Origin => 'https://app.example' });
ok(!$r->{headers}{'access-control-allow-origin'}, 'CORS is off by default');

$t->done;

# --- CORS, where it is on: a preflight without a key, headers on answers

my $c = ChatBridgeTest->new;
$c->start_sidecar;
$c->start_nginx(location => 'chatbridge_cors on;
                              chatbridge_api_key k sk-0123456789abc;');
$r = $c->http(OPTIONS => '/v1/chat/completions', undef,
              { Origin => 'https://app.example',
                'Access-Control-Request-Method' => 'POST',
                'Access-Control-Request-Headers' => 'authorization,content-type' });
is($r->{status}, 204, 'CORS preflight: 204 without a key');
is($r->{headers}{'access-control-allow-origin'}, '*', 'allow origin');
like($r->{headers}{'access-control-allow-headers'}, qr/Authorization/,
     'allows the Authorization header');
like($r->{headers}{'access-control-allow-methods'}, qr/POST/, 'and POST');
$r = $c->http(POST => '/v1/chat/completions', $ok_body,
              { Origin => 'https://app.example' });
is($r->{status}, 401, 'the real request still needs the key');
is($r->{headers}{'access-control-allow-origin'}, '*',
   'and its answer carries the CORS header');
$c->done;

# --- no sidecar: 502 at once; no browser: 503 with Retry-After

my $u = ChatBridgeTest->new;
$u->start_nginx;
$r = $u->http(POST => '/v1/chat/completions', $ok_body);
error_ok($u, $r, 502, 'bridge_unavailable', 'no sidecar');

$u->start_sidecar;
ok(ChatBridgeTest::wait_for(sub { ($u->status->{link} // '') eq 'ready' }, 3),
   'the worker links once the sidecar starts');
$r = $u->http(POST => '/v1/chat/completions', $ok_body);
error_ok($u, $r, 503, 'no_browser', 'no browser');
ok($r->{headers}{'retry-after'} > 0, 'with Retry-After');

$r = $u->http(GET => '/v1/models');
is($r->{status}, 200, '/v1/models answers with no browser');
is_deeply($u->decode($r->{content})->{data}, [], 'an empty list, not a 404');

$u->done;
done_testing;
