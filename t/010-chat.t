# Round trips through nginx, the sidecar and a scripted browser: streaming
# and not, SSE framing and headers, keep-alive comments while the first
# token is awaited, models from the file and from browsers, status.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Test::More;

my $t = ChatBridgeTest->new;

open my $fh, '>', $t->dir . '/models.json' or die;
print $fh qq({\n  // LMArena Bridge's format\n  "file-model": "0196a1b2-0000-7000-8000-000000000001",\n  "image-model": "0196a1b2-0000-7000-8000-000000000002:image",\n});
close $fh;

$t->start_sidecar;
$t->start_nginx(
    http => 'gzip on; gzip_types text/event-stream application/json; '
            . 'gzip_min_length 1;',
    location => "chatbridge_models_file " . $t->dir . "/models.json;\n"
                . "chatbridge_keepalive 1s;");
$t->start_browser('--models', 'browser-model-a,browser-model-b');
ok($t->wait_browsers(1), 'the scripted browser is connected');

# --- non-streaming

my $r = $t->http(POST => '/v1/chat/completions', {
    model => 'm', messages => [{ role => 'user', content => 'hello world' }] });
is($r->{status}, 200, 'non-stream: 200');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON');
my $j = $t->decode($r->{content});
is($j->{object}, 'chat.completion', 'object chat.completion');
like($j->{id}, qr/^chatcmpl-[0-9a-f]{32}$/, 'an id made of the request id');
is($r->{headers}{'x-request-id'}, substr($j->{id}, 9), 'X-Request-Id matches');
is($j->{model}, 'm', 'model echoed');
is($j->{choices}[0]{message}{role}, 'assistant', 'role assistant');
is($j->{choices}[0]{message}{content}, 'echo: hello world', 'the answer');
is($j->{choices}[0]{finish_reason}, 'stop', 'finish_reason stop');
ok($j->{usage}{prompt_tokens} > 0 && $j->{usage}{completion_tokens} > 0,
   'usage counted');
ok($j->{usage}{estimated}, 'and marked as estimated');

# --- streaming

my $s = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    stream_options => { include_usage => JSON::PP::true },
    messages => [{ role => 'user', content => 'one two three four' }] });

is($s->{status}, 200, 'stream: 200');
like($s->{headers}{'content-type'}, qr{^text/event-stream}, 'event stream');
is($s->{headers}{'transfer-encoding'}, 'chunked', 'chunked');
is($s->{headers}{'x-accel-buffering'}, 'no', 'X-Accel-Buffering: no');
is($s->{headers}{'cache-control'}, 'no-cache', 'Cache-Control: no-cache');
ok(!$s->{headers}{'content-encoding'}, 'never gzipped, even with gzip on');

my @d = $t->sse_data($s);
is($d[0]{choices}[0]{delta}{role}, 'assistant', 'first chunk carries the role');
is($d[-1], '[DONE]', 'ends with [DONE]');
is($t->sse_text($s), 'echo: one two three four', 'deltas add up');
my @content = grep { ref && @{ $_->{choices} } && defined $_->{choices}[0]{delta}{content}
                     && $_->{choices}[0]{delta}{content} ne '' } @d;
ok(@content >= 4, 'one SSE event per delta (' . scalar(@content) . ')');
my ($fin) = grep { ref && @{ $_->{choices} } && $_->{choices}[0]{finish_reason} } @d;
is($fin->{choices}[0]{finish_reason}, 'stop', 'a finish chunk');
my ($usage) = grep { ref && $_->{usage} } @d;
ok($usage && $usage->{usage}{total_tokens} > 0, 'usage chunk with include_usage');
is(scalar(@{ $usage->{choices} }), 0, 'the usage chunk has no choices');
my %ids = map { $_->{id} => 1 } grep { ref } @d;
is(scalar(keys %ids), 1, 'every chunk has the same id');

# deltas are flushed one by one, not held back
$s = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user', content => 'a b c [[gap 300]]' }] });
my @at = map { $_->{at} } @{ $s->{events} };
ok($at[-1] - $at[1] >= 0.5, 'events arrive spread out as they are produced '
   . sprintf('(%.2fs)', $at[-1] - $at[1]));

# while the first token is awaited, comments keep the stream alive
$s = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user', content => 'slow [[delay 2500]]' }] });
my @ka = grep { $_->{text} =~ /^: keep-alive/ } @{ $s->{events} };
ok(@ka >= 2, scalar(@ka) . ' keep-alive comments during a 2.5 s wait');
ok($ka[0]{at} < 1.5, sprintf('the first after about a second (%.2fs)',
                             $ka[0]{at}));
is($t->sse_text($s), 'echo: slow', 'then the answer');

# --- models

$r = $t->http(GET => '/v1/models');
is($r->{status}, 200, '/v1/models: 200');
$j = $t->decode($r->{content});
is($j->{object}, 'list', 'a list');
my %m = map { $_->{id} => $_ } @{ $j->{data} };
ok($m{'file-model'} && $m{'image-model'}, 'models from the models file');
ok($m{'browser-model-a'} && $m{'browser-model-b'},
   'models the browser announced');
is($m{'file-model'}{object}, 'model', 'model objects');

$r = $t->http(GET => '/v1/models/browser-model-a');
is($t->decode($r->{content})->{id}, 'browser-model-a', '/v1/models/<id>');
$r = $t->http(GET => '/v1/models/nope');
is($r->{status}, 404, 'unknown model: 404');
is($t->decode($r->{content})->{error}{code}, 'model_not_found',
   'model_not_found');

# --- status

# the sidecar republishes its state on its 100 ms tick
ok(ChatBridgeTest::wait_for(sub { ($t->status->{browsers}[0]{served} // 0) >= 4 },
                            2), 'status: the browser served what we sent');
my $st = $t->status;
is($st->{link}, 'ready', 'status: the worker is linked');
is($st->{browsers}[0]{id}, 'fake', 'status: lists the browser');
is($st->{browsers}[0]{kind}, 'test', 'with its kind');
ok($st->{shm}{size} > 0, 'status: shared memory size');
is($st->{shm}{slots}{in_use}, 0, 'no slot in use when idle');
is($st->{shm}{chunks}{in_use}, 0, 'no chunk in use when idle');

# --- the protocol: every frame the browser got was valid

is(scalar($t->events('protocol_error')), 0,
   'the browser saw no invalid frame');

$t->done;
done_testing;
