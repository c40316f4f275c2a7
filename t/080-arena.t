# LMArena Bridge's files, copied in as they are: sessions per model, round
# robin across workers, cooldown after 401/429, participantPosition, tavern
# and bypass modes, placeholder ids, use_default_ids_if_mapping_not_found,
# stream_response_timeout_seconds and api_key from config.jsonc, reloads,
# and clear errors for broken files.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest qw(put);
use Test::More;
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
my $a = $t->dir . '/arena-a';
my $b = $t->dir . '/arena-b';
mkdir $a;
mkdir $b;

put("$a/config.jsonc", <<'JSONC');
{
    // LMArena Bridge v2.5.6, copied as it was
    "version": "2.5.6",
    "session_id": "global-session",
    "message_id": "global-message",
    "id_updater_last_mode": "direct_chat", /* the global mode */
    "id_updater_battle_target": "A",
    "enable_auto_update": true,
    "bypass_enabled": true,
    "tavern_mode_enabled": false,
    "use_default_ids_if_mapping_not_found": true,
    "stream_response_timeout_seconds": 360,
    "file_bed_upload_url": "http://127.0.0.1:5180/upload", // a URL survives
    "api_key": "",
}
JSONC

put("$a/models.json", <<'JSON');
{
    "gpt-4o": "0196aaaa-0000-7000-8000-000000000001",
    "claude": "0196aaaa-0000-7000-8000-000000000002",
    "dall-e": "0196aaaa-0000-7000-8000-000000000003:image"
}
JSON

put("$a/model_endpoint_map.json", <<'JSON');
{
    "claude": [
        {"session_id": "s1", "message_id": "m1", "mode": "direct_chat"},
        {"session_id": "s2", "message_id": "m2", "mode": "battle",
         "battle_target": "B"},
        {"session_id": "s3", "message_id": "m3"}
    ],
    "gemini": {"session_id": "g1", "message_id": "gm1"},
    "todo": {"session_id": "YOUR_SESSION_ID", "message_id": "YOUR_MESSAGE_ID"}
}
JSON

put("$b/config.jsonc", <<'JSONC');
{
    "session_id": "b-session",
    "message_id": "b-message",
    "id_updater_last_mode": "battle",
    "id_updater_battle_target": "B",
    "tavern_mode_enabled": true,
    "bypass_enabled": false,
    "use_default_ids_if_mapping_not_found": false,
    "stream_response_timeout_seconds": 1,
    "api_key": "sk-config-0123456789"
}
JSONC
put("$b/model_endpoint_map.json", '{"mapped": {"session_id": "bs", "message_id": "bm"}}');

$t->start_sidecar;
$t->start_nginx(
    location => "chatbridge_arena $a; chatbridge_arena_cooldown 2s;",
    server => "location /b/ { chatbridge; chatbridge_arena $b; }");
$t->start_browser('--id', 'tab');
ok($t->wait_browsers(1), 'browser connected');

my %key_b = (Authorization => 'Bearer sk-config-0123456789');

sub ask {
    my ($path, $model, $content, %o) = @_;
    my $msgs = $o{messages} // [{ role => 'system', content => 'be brief' },
                                { role => 'user', content => $content }];
    return $t->http(POST => $path, { model => $model, messages => $msgs },
                    $o{headers});
}

sub last_task {
    my @tasks = $t->events('task');
    return $tasks[-1];
}

# --- round robin over a model's pool, across both workers

my @seen;
for (1 .. 6) {
    my $r = ask('/v1/chat/completions', 'claude', "rr $_");
    is($r->{status}, 200, "claude request $_: 200");
    push @seen, last_task()->{arena}{session_id};
}
is("@seen", 's1 s2 s3 s1 s2 s3', 'sessions taken in turn, not at random');

# the session's mode and side decide every participantPosition
my %by = map { $_->{arena}{session_id} => $_ } grep { $_->{arena} } $t->events('task');
my $s1 = $by{s1};
is($s1->{arena}{mode}, 'direct_chat', 's1: direct_chat');
is_deeply([map { $_->{position} } @{ $s1->{messages} }], ['b', 'a', 'a'],
          'direct_chat: system b, user a (and the bypass message a)');
is($s1->{messages}[-1]{content}, ' ', 'bypass_enabled appended " "');
is($s1->{arena}{model_uuid}, '0196aaaa-0000-7000-8000-000000000002',
   'model_uuid from models.json');
is($s1->{arena}{model_type}, 'chat', 'model_type chat');

my $s2 = $by{s2};
is($s2->{arena}{mode}, 'battle', 's2: battle');
is($s2->{arena}{battle_target}, 'b', 'target b');
is_deeply([map { $_->{position} } @{ $s2->{messages} }], ['b', 'b', 'b'],
          'battle: every message on the target side');

is($by{s3}{arena}{mode}, 'direct_chat', 's3 takes the global mode');
is($by{s3}{arena}{message_id}, 'm3', 'with its own message id');

# --- a legacy single object, the global ids, an image model

ask('/v1/chat/completions', 'gemini', 'x');
is(last_task()->{arena}{session_id}, 'g1', 'a single mapping object works');

ask('/v1/chat/completions', 'gpt-4o', 'x');
my $g = last_task();
is($g->{arena}{session_id}, 'global-session', 'unmapped: the global ids');
is($g->{arena}{message_id}, 'global-message', 'and message id');
is($g->{arena}{model_uuid}, '0196aaaa-0000-7000-8000-000000000001',
   'with its model id');

ask('/v1/chat/completions', 'dall-e', 'draw');
my $img = last_task();
is($img->{arena}{model_type}, 'image', 'an image model: model_type image');
is($img->{messages}[-1]{content}, 'draw', 'and no bypass message for it');

ask('/v1/chat/completions', 'unknown-model', 'x');
ok(!defined last_task()->{arena}{model_uuid},
   'a model not in models.json: model_uuid null (the site keeps its own)');

# --- placeholder ids: refused before any browser is bothered

my $before = scalar $t->events('task');
my $r = ask('/v1/chat/completions', 'todo', 'x');
is($r->{status}, 400, 'placeholder ids: 400');
my $e = $t->decode($r->{content})->{error};
is($e->{code}, 'session_not_configured', 'session_not_configured');
like($e->{message}, qr/placeholder.*chatbridgectl capture/s,
     'the message says what to do');
is(scalar($t->events('task')), $before, 'no task reached the browser');

# --- cooldown after 429: the session is skipped, then back

$r = ask('/v1/chat/completions', 'claude', 'x [[error rate_limited 429]]');
is($r->{status}, 429, 'the site said 429');
my $hurt = last_task()->{arena}{session_id};
my %used;
for (1 .. 4) {
    ask('/v1/chat/completions', 'claude', "after $_");
    $used{ last_task()->{arena}{session_id} }++;
}
ok(!$used{$hurt}, "$hurt is skipped while it rests");
is(scalar(keys %used), 2, 'the other two take turns');

# every session resting: 503 with Retry-After
for (1 .. 3) {
    ask('/v1/chat/completions', 'claude', 'x [[error rate_limited 429]]');
}
$r = ask('/v1/chat/completions', 'claude', 'x');
is($r->{status}, 503, 'every session resting: 503');
is($t->decode($r->{content})->{error}{code}, 'sessions_cooling_down',
   'sessions_cooling_down');
ok($r->{headers}{'retry-after'} >= 1, 'with Retry-After');
sleep 2.2;
$r = ask('/v1/chat/completions', 'claude', 'x');
is($r->{status}, 200, 'after chatbridge_arena_cooldown they are back');

# --- the second directory: tavern mode, no default ids, timeout and key

$r = ask('/b/chat/completions', 'mapped', 'x');
is($r->{status}, 401, 'api_key from config.jsonc protects its location');

$r = ask('/b/chat/completions', 'mapped', 'x',
         messages => [{ role => 'user', content => 'u1' },
                      { role => 'system', content => 'first' },
                      { role => 'assistant', content => 'a1' },
                      { role => 'system', content => 'second' },
                      { role => 'user', content => 'u2' }],
         headers => \%key_b);
is($r->{status}, 200, 'with its key: 200');
my $tv = last_task();
is($tv->{messages}[0]{role}, 'system', 'tavern mode: one system message first');
is($tv->{messages}[0]{content}, "first\n\nsecond", 'merged with a blank line');
is(scalar(@{ $tv->{messages} }), 4, 'and the rest in order, no bypass');
is($tv->{arena}{mode}, 'battle', 'the global mode of this file: battle');
is_deeply([map { $_->{position} } @{ $tv->{messages} }], [('b') x 4],
          'battle B: all b');

$r = ask('/b/chat/completions', 'other', 'x', headers => \%key_b);
is($r->{status}, 400, 'use_default_ids_if_mapping_not_found false: 400');
is($t->decode($r->{content})->{error}{code}, 'model_not_mapped',
   'model_not_mapped');

my $t0 = time;
$r = ask('/b/chat/completions', 'mapped', 'x [[silent]]', headers => \%key_b);
is($r->{status}, 504, 'stream_response_timeout_seconds 1: 504');
ok(time - $t0 < 3, sprintf('after about a second (%.1f s)', time - $t0));

# --- images spread over the pool

$r = $t->http(POST => '/v1/images/generations',
              { model => 'claude', n => 3,
                prompt => 'cats [[image https://example.test/c.png]]' });
is($r->{status}, 200, 'images: 200');
is(scalar(@{ $t->decode($r->{content})->{data} }), 3, 'three images');
my @img = grep { $_->{op} eq 'image' } $t->events('task');
my %sess = map { $_->{arena}{session_id} => 1 } @img[-3 .. -1];
is(scalar(keys %sess), 3, 'each from another session of the pool');

# --- a reload applies edits to the files

put("$a/model_endpoint_map.json", <<'JSON');
{ "gemini": {"session_id": "g-new", "message_id": "gm-new", "mode": "battle"} }
JSON
$t->reload_nginx;
ok(ChatBridgeTest::wait_for(sub {
       ask('/v1/chat/completions', 'gemini', 'x');
       (last_task()->{arena}{session_id} // '') eq 'g-new' }, 5),
   'after nginx -s reload the new session is used');
is(last_task()->{arena}{mode}, 'battle', 'with its mode');

# --- broken files: nginx -t says which file, line and column

put("$a/config.jsonc", "{\n  \"session_id\": \"x\"\n  \"message_id\": \"y\"\n}\n");
my $out = `$ChatBridgeTest::NGINX -t -p ${\ $t->dir} -c ${\ $t->dir}/nginx.conf 2>&1`;
isnt($?, 0, 'nginx -t fails on a broken config.jsonc');
like($out, qr{arena-a/config\.jsonc:3:\d+:}, 'naming the file, line and column');

put("$a/config.jsonc", '{"id_updater_last_mode": "duel"}');
$out = `$ChatBridgeTest::NGINX -t -p ${\ $t->dir} -c ${\ $t->dir}/nginx.conf 2>&1`;
like($out, qr/id_updater_last_mode.*direct_chat.*battle/,
     'a bad value is named with what is allowed');

$t->done;
done_testing;
