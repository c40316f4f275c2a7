# Operator commands behind their own keys: session-id capture (to a model's
# pool or to the global ids, written atomically with comments kept, in force
# for the next request without a reload, and kept after one), its timeout,
# chatbridgectl, the model-list command with models.json updated; and the
# userscript served with this bridge's URL and token baked in.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest qw(put slurp);
use IO::Socket::INET;
use MIME::Base64 qw(encode_base64);
use Test::More;
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
my $dir = $t->dir . '/arena';
mkdir $dir;
chmod 0777, $dir;

put("$dir/config.jsonc", <<'JSONC');
{
    // my settings: keep this comment
    "session_id": "YOUR_SESSION_ID",
    "message_id": "YOUR_MESSAGE_ID",
    "id_updater_last_mode": "direct_chat",
    "id_updater_battle_target": "A",
    "file_bed_upload_url": "http://127.0.0.1:5180/upload", // and this URL
}
JSONC
put("$dir/models.json", qq({\n  "old-model": "0000-old",\n  "kept": "0000-kept"\n}\n));
put("$dir/model_endpoint_map.json", <<'JSON');
{
    // the gemini pool
    "gemini": {"session_id": "g1", "message_id": "gm1"}
}
JSON

my $script = $t->dir . '/chatbridge.user.js';
put($script, "// ==UserScript==\n// \@name test\n// ==/UserScript==\n"
             . "const WS = '__CHATBRIDGE_WS_URL__';\n"
             . "const TOKEN = '__CHATBRIDGE_TOKEN__';\n"
             . "// again: '__CHATBRIDGE_WS_URL__' '__CHATBRIDGE_TOKEN__'"
             . " '__CHATBRIDGE_WS_URL__'\n");

my $admin = 'sk-admin-0123456789abcdef';
put($t->dir . '/admin.keys', "# operators\nfile-ops sk-file-admin-0123456789\n");
my %auth = (Authorization => "Bearer $admin");

$t->start_sidecar('--state-dir', $dir, '--update-models', '1');
$t->start_nginx(
    location => "chatbridge_arena $dir;",
    server => "
        location /chatbridge/admin/ {
            chatbridge_admin;
            chatbridge_admin_key ops $admin;
            chatbridge_arena $dir;
        }
        location /noadmin/ { chatbridge_admin; }
        location = /chatbridge/chatbridge.user.js {
            chatbridge_userscript $script;
            chatbridge_browser_token ${\ $t->token };
        }
        location = /keyed.user.js {
            chatbridge_userscript $script;
            chatbridge_browser_token ${\ $t->token };
            chatbridge_admin_keys_file ${\ $t->dir }/admin.keys;
        }
        # for chatbridgectl --url .../ctl: the status behind the admin key
        location = /ctl/chatbridge/status {
            chatbridge_status;
            chatbridge_admin_key ops $admin;
        }
        # for chatbridgectl --url .../bogus: a capture answer without ids
        location = /bogus/chatbridge/admin/capture {
            default_type application/json;
            return 200 '{\"written\":false,\"applied\":true}';
        }");

# --- the userscript, with this bridge baked in

my $r = $t->http(GET => '/chatbridge/chatbridge.user.js');
is($r->{status}, 200, 'the userscript is served');
like($r->{headers}{'content-type'}, qr{^text/javascript}, 'as JavaScript');
is($r->{headers}{'cache-control'}, 'no-store', 'never cached (it holds the token)');
like($r->{content}, qr{const WS = 'ws://127\.0\.0\.1:${\ $t->port }/chatbridge/ws';},
     'the WebSocket URL from the request');
like($r->{content}, qr{const TOKEN = '${\ $t->token }';}, 'and the token');
unlike($r->{content}, qr/__CHATBRIDGE_/, 'no placeholder left');

my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port)
    or die;
$s->syswrite("GET /chatbridge/chatbridge.user.js HTTP/1.0\r\n"
             . "Host: evil'+alert(1)+'\r\n\r\n");
my $raw = join '', <$s>;
like($raw, qr{^HTTP/1\.1 400}, 'a Host that would break out of the string: 400');

# every placeholder is replaced, however often it appears and however long
# the Host is: the answer is sized for all of them
my $host = ('a' x 4000) . '.example';
$s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port)
    or die;
$s->syswrite("GET /chatbridge/chatbridge.user.js HTTP/1.0\r\nHost: $host\r\n\r\n");
$raw = join '', <$s>;
my ($head, $body) = split /\r\n\r\n/, $raw, 2;
like($head, qr{^HTTP/1\.1 200}, 'a 4 KB Host: 200');
my $ws = "ws://$host/chatbridge/ws";
my $want = "// ==UserScript==\n// \@name test\n// ==/UserScript==\n"
           . "const WS = '$ws';\nconst TOKEN = '${\ $t->token }';\n"
           . "// again: '$ws' '${\ $t->token }' '$ws'\n";
ok(defined $body && $body eq $want, 'three URLs and two tokens, all in place');

# with admin keys in force, the script (it holds the token) needs one
$r = $t->http(GET => '/keyed.user.js');
is($r->{status}, 401, 'a keyed userscript without a key: 401');
like($r->{headers}{'www-authenticate'}, qr/^Basic realm="chatbridge userscript"/,
     'the browser is asked for it');
unlike($r->{content}, qr/\Q${\ $t->token }\E/, 'and the token is not in the answer');
$r = $t->http(GET => '/keyed.user.js', undef,
              { Authorization => 'Basic ' . encode_base64('me:sk-file-admin-0123456789', '') });
is($r->{status}, 200, 'the key from chatbridge_admin_keys_file as the password: 200');
like($r->{content}, qr/const TOKEN = '${\ $t->token }';/, 'the script');
put($t->dir . '/short.keys', "short sk-short-key\n");
my ($krc, $kout) = $t->nginx_test(server => "location /k/ { chatbridge_admin;
    chatbridge_admin_keys_file ${\ $t->dir }/short.keys; }");
like($kout, qr/shorter than 16 characters/, 'an admin key file with a short key is refused');

# the token and the URL go into the script's strings: nothing that could
# break out of them is accepted
for my $bad ("tok'en", 'tok\\en', 'tok<en') {
    my ($rc, $out) = $t->nginx_test(server => "location /u.js {
        chatbridge_userscript $script; chatbridge_browser_token \"$bad\"; }");
    isnt($rc, 0, "a token with $bad is refused");
    like($out, qr/cannot go into the userscript/, 'saying why') or diag($out);
}
my ($rc, $out) = $t->nginx_test(server => "location /u.js {
    chatbridge_userscript $script; }");
like($out, qr/needs "chatbridge_browser_token"/, 'a userscript needs a token');

# --- admin keys

$r = $t->http(POST => '/noadmin/capture', {});
is($r->{status}, 403, 'no admin key configured: 403');
is($t->decode($r->{content})->{error}{code}, 'admin_disabled', 'admin_disabled');

$r = $t->http(POST => '/chatbridge/admin/capture', {},
              { Authorization => 'Bearer sk-admin-wrong-0000000000' });
is($r->{status}, 401, 'a wrong admin key: 401');

$r = $t->http(GET => '/chatbridge/admin/capture', undef, \%auth);
is($r->{status}, 405, 'GET: 405');

$r = $t->http(POST => '/chatbridge/admin/capture', { mode => 'duel' }, \%auth);
is($r->{status}, 400, 'a bad mode: 400');

$r = $t->http(POST => '/chatbridge/admin/capture', {}, \%auth);
is($r->{status}, 503, 'no tab that can capture: 503');
is($t->decode($r->{content})->{error}{code}, 'no_capture_browser',
   'no_capture_browser');

# --- a tab that never sees the click: the capture times out

my $slow = $t->start_browser('--id', 'slowpoke', '--kind', 'arena',
                             '--capture', 'none');
ok($t->wait_browsers(1), 'a tab that can capture');
my $t0 = time;
$r = $t->http(POST => '/chatbridge/admin/capture', { timeout => 1 }, \%auth);
is($r->{status}, 504, 'no click within the timeout: 504');
is($t->decode($r->{content})->{error}{code}, 'capture_timeout',
   'capture_timeout');
ok(time - $t0 < 4, sprintf('after about a second (%.1f s)', time - $t0));
ok(ChatBridgeTest::wait_for(sub {
       grep { ($_->{reason} // '') eq 'timeout' } $t->events('cancel') }, 2),
   'the tab is told to disarm');
$t->stop_browser($slow);

# --- capture into a model's pool

$t->start_browser('--id', 'tab', '--kind', 'arena', '--capture',
                  'cap-s1:cap-m1',
                  '--models', 'kept=0000-kept,new-model=1111-new,'
                              . 'pix=2222-pix:image');
ok(ChatBridgeTest::wait_for(sub {
       my @b = @{ $t->status->{browsers} // [] };
       @b == 1 && $b[0]{id} eq 'tab' && $b[0]{state} eq 'ready' }, 10),
   'a tab that captures (and only it)');

$r = $t->http(POST => '/chatbridge/admin/capture',
              { model => 'gemini', mode => 'battle', target => 'B' }, \%auth);
is($r->{status}, 200, 'capture for gemini: 200') or diag($r->{content});
my $j = $t->decode($r->{content});
is($j->{entry}{session_id}, 'cap-s1', 'the captured session');
is($j->{entry}{mode}, 'battle', 'its mode');
is($j->{entry}{battle_target}, 'B', 'its side');
is($j->{written}, "$dir/model_endpoint_map.json", 'written to the map');
ok($j->{applied}, 'and in force');

my $map = slurp("$dir/model_endpoint_map.json");
like($map, qr{// the gemini pool}, 'the map keeps its comment');
my $m = $t->decode($map =~ s{//.*}{}gr);
is($m->{gemini}{session_id}, 'cap-s1',
   'a model mapped to one session gets it replaced');
my @tmp = glob("$dir/*.tmp.*");   # the sidecar's, named with its pid
is_deeply(\@tmp, [], 'no temp file left');

$r = $t->http(POST => '/v1/chat/completions',
              { model => 'gemini', messages => [{ role => 'user',
                                                  content => 'x' }] });
is($r->{status}, 200, 'the next request');
my ($task) = reverse $t->events('task');
is($task->{arena}{session_id}, 'cap-s1', 'uses the captured session, no reload');
is($task->{arena}{battle_target}, 'b', 'on its side');

# a pool gets the capture first, and keeps its other sessions
put("$dir/model_endpoint_map.json", <<'JSON');
{
    "gemini": {"session_id": "cap-s1", "message_id": "cap-m1", "mode": "battle",
               "battle_target": "B"},
    // a pool
    "claude": [{"session_id": "c1", "message_id": "cm1"},
               {"session_id": "c2", "message_id": "cm2"}]
}
JSON
$t->reload_nginx;
$r = $t->http(POST => '/chatbridge/admin/capture', { model => 'claude' },
              \%auth);
is($r->{status}, 200, 'capture for a pool: 200');
$m = $t->decode(slurp("$dir/model_endpoint_map.json") =~ s{//.*}{}gr);
is_deeply([map { $_->{session_id} } @{ $m->{claude} }], ['cap-s1', 'c1', 'c2'],
          'the pool gets it first and keeps the others');
my %pool;
for (1 .. 3) {
    $t->http(POST => '/v1/chat/completions',
             { model => 'claude', messages => [{ role => 'user',
                                                 content => 'x' }] });
    ($task) = reverse $t->events('task');
    $pool{ $task->{arena}{session_id} }++;
}
is_deeply([sort keys %pool], ['c1', 'c2', 'cap-s1'],
          'and the next requests take all three in turn, without a reload');

# --- capture the global ids, with chatbridgectl

$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url } --key $admin capture --mode direct_chat 2>&1`;
is($?, 0, 'chatbridgectl capture exits 0') or diag($out);
like($out, qr/Captured session_id cap-s1, message_id cap-m1 \(direct_chat\) for the global ids/,
     'and says what it captured');
like($out, qr/Written to \Q$dir\E\/config\.jsonc/, 'and where');

my $cfg = slurp("$dir/config.jsonc");
like($cfg, qr{// my settings: keep this comment}, 'config.jsonc keeps its comments');
like($cfg, qr{"http://127\.0\.0\.1:5180/upload", // and this URL},
     'and its URL with // in it');
like($cfg, qr{"session_id": "cap-s1"}, 'the global session id is replaced');
unlike($cfg, qr/YOUR_/, 'no placeholder left');

$r = $t->http(POST => '/v1/chat/completions',
              { model => 'unmapped', messages => [{ role => 'user',
                                                    content => 'x' }] });
is($r->{status}, 200, 'an unmapped model no longer gets 400 for placeholders');
($task) = reverse $t->events('task');
is($task->{arena}{session_id}, 'cap-s1', 'it has the captured global ids');

$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url } --key wrong-key-000000000000 capture 2>&1`;
isnt($?, 0, 'chatbridgectl with a wrong key fails');
like($out, qr/Incorrect API key/, 'saying why');

# its key from a file in chatbridge_admin_keys_file's format
put($t->dir . '/ctl.keys', "# operators\nops $admin\n");
$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url } --key-file ${\ $t->dir }/ctl.keys capture --timeout 1 2>&1`;
is($?, 0, 'chatbridgectl --key-file takes "NAME KEY" lines') or diag($out);
like($out, qr/^Captured session_id cap-s1, message_id cap-m1 \(direct_chat\) for the global ids, from browser tab\.$/m,
     'and the capture went through with that key') or diag($out);

# a key file named on the command line must be there: no other key is
# tried in its place (here a good one in $CHATBRIDGE_ADMIN_KEY_FILE)
{
    local $ENV{CHATBRIDGE_ADMIN_KEY_FILE} = $t->dir . '/ctl.keys';
    $out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url('/ctl') } status 2>&1`;
    is($?, 0, "chatbridgectl takes \$CHATBRIDGE_ADMIN_KEY_FILE's key") or diag($out);
    $out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url('/ctl') } --key-file ${\ $t->dir }/absent.keys status 2>&1`;
    isnt($?, 0, 'an explicit --key-file that cannot be read is an error');
    like($out, qr{^chatbridgectl: cannot read the key file \Q${\ $t->dir }\E/absent\.keys: }m,
         'naming the file') or diag($out);
    unlike($out, qr/^link /m, 'and no other key is used') or diag($out);

    put($t->dir . '/empty.keys', "# nobody yet\n\n");
    $out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url('/ctl') } --key-file ${\ $t->dir }/empty.keys status 2>&1`;
    isnt($?, 0, 'nor is a --key-file without a key');
    like($out, qr/holds no key/, 'saying so') or diag($out);

    local $ENV{CHATBRIDGE_ADMIN_KEY_FILE} = $t->dir . '/absent.keys';
    $out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url('/ctl') } status 2>&1`;
    isnt($?, 0, 'the same for $CHATBRIDGE_ADMIN_KEY_FILE');
    like($out, qr/cannot read the key file/, 'saying so') or diag($out);
}

# a capture answer without the ids is no capture
$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url('/bogus') } --key $admin capture 2>&1`;
isnt($?, 0, 'chatbridgectl capture fails on an answer without the ids');
like($out, qr/answered without the captured ids/, 'saying so') or diag($out);
unlike($out, qr/^Captured/m, 'and claims no capture') or diag($out);

# --- after a reload, the files carry the captures

$t->reload_nginx;
$r = $t->http(POST => '/v1/chat/completions',
              { model => 'gemini', messages => [{ role => 'user',
                                                  content => 'x' }] });
($task) = reverse $t->events('task');
is($task->{arena}{session_id}, 'cap-s1', 'after a reload the capture holds');

# --- the model list, and models.json following it

$r = $t->http(POST => '/chatbridge/admin/models', {}, \%auth);
is($r->{status}, 200, "the models command: 200") or diag($r->{content});
is($t->decode($r->{content})->{asked}, 1, 'one arena tab asked');

ok(ChatBridgeTest::wait_for(sub {
       slurp("$dir/models.json") =~ /new-model/ }, 3),
   'models.json follows the page (--update-models)');
my $models = $t->decode(slurp("$dir/models.json"));
is($models->{'new-model'}, '1111-new', 'a new model with its id');
is($models->{pix}, '2222-pix:image', 'an image model marked :image');
ok(!exists $models->{'old-model'}, 'a model gone from the page is dropped');
like($t->log('sidecar'),
     qr/models\.json updated from browser tab: added new-model, pix; removed old-model; changed none/,
     'and the difference is logged');

my $list = $t->decode($t->http(GET => '/v1/models')->{content});
ok((grep { $_->{id} eq 'new-model' } @{ $list->{data} }),
   '/v1/models shows the page\'s models at once');

# --- chatbridgectl models and status

my $asked = () = grep { $_->{frame}{command} eq 'send_models' }
                 $t->events('command');
$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url } --key $admin models 2>&1`;
is($?, 0, 'chatbridgectl models exits 0') or diag($out);
is($out, "Asked 1 tab(s) for their model list; GET /v1/models shows it.\n",
   'and says how many tabs it asked');
ok(ChatBridgeTest::wait_for(sub {
       (() = grep { $_->{frame}{command} eq 'send_models' }
                  $t->events('command')) == $asked + 1 }, 3),
   'the tab was asked');

$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url } --key wrong-key-000000000000 models 2>&1`;
isnt($?, 0, 'chatbridgectl models with a wrong key fails');
like($out, qr/Incorrect API key/, 'saying why');

$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url('/ctl') } --key $admin status 2>&1`;
is($?, 0, 'chatbridgectl status exits 0') or diag($out);
like($out, qr/\Alink ready, 1 browser\(s\), 0 request\(s\) in flight, queue 0\n/,
     'it prints the link, the browsers, the requests and the queue')
    or diag($out);
like($out, qr{^  tab\s+arena\s+ready\s+in flight 0/\d+, served [1-9]\d*, errors 0$}m,
     'and a line for the tab') or diag($out);

$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url ${\ $t->url('/ctl') } --key wrong-key-000000000000 status 2>&1`;
isnt($?, 0, 'chatbridgectl status with a wrong key fails') or diag($out);
unlike($out, qr/^link /m, 'and prints no status');

# over https, the bridge's certificate is verified: an admin key goes only
# to the server it names
my $front = ChatBridgeTest->new;
$front->example_files(client_key => 'sk-client-0123456789', admin_key => $admin);
my $fd = $front->dir;
$front->start_nginx(tls => 1, conf => <<"CONF");
${\ $front->main_conf }
events { worker_connections 64; }
http {
${\ $front->http_paths }
    server {
        listen 127.0.0.1:${\ $front->port } ssl;
        ssl_certificate $fd/tls/fullchain.pem;
        ssl_certificate_key $fd/tls/privkey.pem;
        location / { proxy_pass ${\ $t->url }; }
    }
}
CONF
my $https = 'https://127.0.0.1:' . $front->port;
{
    local $ENV{SSL_CERT_FILE};
    delete $ENV{SSL_CERT_FILE};
    $out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url $https/ctl --key $admin status 2>&1`;
    isnt($?, 0, 'chatbridgectl refuses a certificate no trusted CA signed')
        or diag($out);
    like($out, qr/certificate verify failed/i, 'saying so') or diag($out);
    is($front->log('access'), '', 'before sending anything');
}
$out = `$ChatBridgeTest::TOP/bin/chatbridgectl --url $https/ctl --ca-file $fd/tls/fullchain.pem --key $admin status 2>&1`;
is($?, 0, 'and takes it with --ca-file naming its CA') or diag($out);
like($out, qr/\Alink ready, 1 browser/, 'then it works') or diag($out);
$front->done;

$t->done;
done_testing;
