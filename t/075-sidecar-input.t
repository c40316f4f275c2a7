# What a browser sends the sidecar and the sidecar keeps: models.json and
# model_endpoint_map.json are written only as nginx loads them (model ids
# without ':', a pool capped by dropping its oldest session, every file
# checked before it is written, no empty model list), read only if they
# are regular files, not links, and not too large; and a frame that answers
# an operator command as if it were a task is refused.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest qw(put slurp);
use Cwd qw(abs_path);
use IO::Socket::INET;
use POSIX qw(mkfifo);
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Test::More;
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
my $dir = $t->dir . '/arena';
my $link = $t->dir . '/arena-link';
mkdir $dir;
chmod 0777, $dir;
symlink $dir, $link or die "symlink: $!";
my $real = abs_path($dir);

my $config = <<'JSONC';
{
    // the global ids
    "session_id": "global-s",
    "message_id": "global-m",
    "id_updater_last_mode": "direct_chat",
    "id_updater_battle_target": "A"
}
JSONC
put("$dir/config.jsonc", $config);
put("$dir/models.json", qq({\n  "old": "0000-old"\n}\n));

# a pool as large as nginx takes: s0 is its newest session, s255 its oldest
my $pool = join ",\n",
    map { qq(        {"session_id": "s$_", "message_id": "m$_"}) } 0 .. 255;
my $map = "{\n    \"big\": [\n$pool\n    ]\n}\n";
put("$dir/model_endpoint_map.json", $map);

my $admin = 'sk-admin-0123456789abcdef';
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
        location /link/admin/ {
            chatbridge_admin;
            chatbridge_admin_key ops $admin;
            chatbridge_arena $link;
        }");

# nginx -t of the running configuration: would a reload take the files?
sub reload_ok {
    my $d = $t->dir;
    my $out = `$ChatBridgeTest::NGINX -t -p $d -c $d/nginx.conf 2>&1`;
    return ($? == 0, $out);
}

sub chat {
    my ($text) = @_;
    return $t->http(POST => '/v1/chat/completions',
                    { model => 'chat', messages => [{ role => 'user',
                                                      content => $text }] });
}

sub capture {
    my ($path, $body) = @_;
    my $r = $t->http(POST => $path, $body, \%auth);
    return ($r->{status}, $t->decode($r->{content}) // {});
}

my $cap = $t->start_browser('--id', 'cap', '--kind', 'arena', '--capture',
                            'cap-s1:cap-m1', '--models', 'base=0000-base');
ok($t->wait_browsers(1), 'a tab that captures');
ok(ChatBridgeTest::wait_for(sub { slurp("$dir/models.json") =~ /base/ }, 5),
   'models.json follows its models');

# --- model ids with ':' never reach models.json

my $r = chat('x [[send-models good=1111-good,colon=ab:cd,pix=ab:cd=image,'
             . 'img==image]]');
is($r->{status}, 200, 'a models frame with ids that hold ":"');
is_deeply($t->decode(slurp("$dir/models.json")),
          { good => '1111-good', img => 'null:image' },
          'models.json has the good ids only');
like($t->log('sidecar'), qr/the uuid of model colon is not an id/,
     'the others are named in the log');
my ($ok, $out) = reload_ok();
ok($ok, 'nginx -t takes models.json') or diag($out);

# --- an empty list leaves models.json alone

my $before = slurp("$dir/models.json");
$r = chat('x [[send-models]]');
is($r->{status}, 200, 'an empty models frame');
is(slurp("$dir/models.json"), $before, 'models.json is not emptied');
$r = chat('x [[send-models plain,other]]');
is(slurp("$dir/models.json"), $before,
   'nor by a list in which no model has an id');

# --- a full pool drops its oldest session for the capture

my ($st, $j) = capture('/chatbridge/admin/capture', { model => 'big' });
is($st, 200, 'capture into a full pool: 200') or diag(explain $j);
my $m = $t->decode(slurp("$dir/model_endpoint_map.json"));
is(scalar @{ $m->{big} }, 256, 'the pool stays at 256 sessions');
is($m->{big}[0]{session_id}, 'cap-s1', 'the capture first');
is($m->{big}[1]{session_id}, 's0', 'then the newest of the others');
is($m->{big}[-1]{session_id}, 's254', 'and the oldest (s255) is gone');
($ok, $out) = reload_ok();
ok($ok, 'nginx -t takes the map') or diag($out);

# --- the directory as its real path

($st, $j) = capture('/link/admin/capture', { model => 'linked' });
is($st, 200, 'capture through a linked directory: 200') or diag(explain $j);
is($j->{written}, "$real/model_endpoint_map.json",
   'written to the real path that was checked');

# --- what nginx would not load is not written

$map = slurp("$dir/model_endpoint_map.json");
my $broken = $map =~ s/\{\s*\n/{\n    "other": ["not a session"],\n/r;
put("$dir/model_endpoint_map.json", $broken);
($st, $j) = capture('/chatbridge/admin/capture', { model => 'fine' });
is($st, 502, 'a map nginx would refuse: 502');
is($j->{error}{code}, 'capture_failed', 'capture_failed');
like($j->{error}{message}, qr/model_endpoint_map\.json: "other"\[0\]/,
     'naming the file and the entry');
is(slurp("$dir/model_endpoint_map.json"), $broken, 'the map is unchanged');
put("$dir/model_endpoint_map.json", $map);

my $bad_config = $config
    =~ s/"session_id"/"tavern_mode_enabled": "yes",\n    "session_id"/r;
put("$dir/config.jsonc", $bad_config);
($st, $j) = capture('/chatbridge/admin/capture', {});
is($st, 502, 'a config.jsonc nginx would refuse: 502');
like($j->{error}{message},
     qr/config\.jsonc: "tavern_mode_enabled" must be true or false/,
     'naming the file and the key');
is(slurp("$dir/config.jsonc"), $bad_config, 'config.jsonc is unchanged');
put("$dir/config.jsonc", $config);

# --- only regular files, not links, not too large, are read

put($t->dir . '/elsewhere.json', $map);
unlink "$dir/model_endpoint_map.json";
symlink $t->dir . '/elsewhere.json', "$dir/model_endpoint_map.json" or die;
($st, $j) = capture('/chatbridge/admin/capture', { model => 'x' });
is($st, 502, 'a map that is a symbolic link: 502');
like($j->{error}{message}, qr/model_endpoint_map\.json: is a symbolic link/,
     'saying so');
ok(-l "$dir/model_endpoint_map.json", 'the link is left as it was');
unlink "$dir/model_endpoint_map.json";

put("$dir/model_endpoint_map.json", $map . (' ' x (4 * 1024 * 1024)));
($st, $j) = capture('/chatbridge/admin/capture', { model => 'x' });
is($st, 502, 'a map over 4 MiB: 502');
like($j->{error}{message}, qr/larger than 4194304 bytes/, 'saying so');
unlink "$dir/model_endpoint_map.json";

mkfifo("$dir/model_endpoint_map.json", 0666) or die "mkfifo: $!";
my $t0 = time;
($st, $j) = capture('/chatbridge/admin/capture',
                    { model => 'x', timeout => 2 });
is($st, 502, 'a map that is a FIFO: 502');
like($j->{error}{message}, qr/model_endpoint_map\.json: not a regular file/,
     'saying so');
ok(time - $t0 < 2, sprintf('at once (%.1f s): the sidecar did not block',
                           time - $t0));
unlink "$dir/model_endpoint_map.json";
put("$dir/model_endpoint_map.json", $map);

unlink "$dir/models.json";
mkfifo("$dir/models.json", 0666) or die "mkfifo: $!";
$t0 = time;
$r = chat('x [[send-models z=2222-z]]');
is($r->{status}, 200, 'a models frame while models.json is a FIFO: 200');
ok(time - $t0 < 2, sprintf('at once (%.1f s)', time - $t0));
like($t->log('sidecar'), qr/not updating .*models\.json: not a regular file/,
     'models.json is left alone, and the log says why');
unlink "$dir/models.json";
put("$dir/models.json", $before);

# --- a command's id answered as if it were a task

$t->stop_browser($cap);
my $mute = $t->start_browser('--id', 'mute', '--kind', 'arena', '--capture',
                             'none', '--models', 'm-mute');
$t->start_browser('--id', 'spare');
ok(ChatBridgeTest::wait_for(sub {
       my @b = grep { $_->{state} eq 'ready' }
               @{ $t->status->{browsers} // [] };
       join(',', sort map { $_->{id} } @b) eq 'mute,spare' }, 10),
   'a tab that never answers a capture, and a spare tab');

# a request sent now, its answer read later
sub start_request {
    my ($path, $body) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->port) or die "connect: $!";
    my $payload = $t->encode($body);
    $s->syswrite("POST $path HTTP/1.0\r\nHost: localhost\r\n"
                 . "Authorization: Bearer $admin\r\n"
                 . "Content-Type: application/json\r\n"
                 . "Content-Length: " . length($payload) . "\r\n\r\n"
                 . $payload);
    return $s;
}

sub end_request {
    my ($s) = @_;
    my $raw = do { local $/; <$s> } // '';
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($status) = ($head // '') =~ m{^HTTP/\S+ (\d+)};
    return ($status // 0, $t->decode($body // '') // {});
}

for my $frame (qw(done busy delta)) {
    my $bad = $t->status->{totals}{bad_frames};
    my $n = () = grep { $_->{frame}{command} eq 'capture' }
                 $t->events('command');

    my $s = start_request('/chatbridge/admin/capture', { timeout => 2 });
    my $cmd;
    ChatBridgeTest::wait_for(sub {
        my @c = grep { $_->{frame}{command} eq 'capture' }
                $t->events('command');
        $cmd = $c[-1]{frame}{command_id} if @c > $n;
        $cmd }, 5);
    ok($cmd, "$frame: a capture armed in the tab");

    $r = $t->http(POST => '/v1/chat/completions',
                  { model => 'm-mute', messages => [{ role => 'user',
                      content => "x [[answer-command $frame]]" }] });
    is($r->{status}, 200, "$frame: the tab's own task is answered");
    my ($task) = reverse $t->events('task');
    is($task->{browser}, 'mute', "$frame: by the tab that holds the command");

    ($st, $j) = end_request($s);
    is($st, 504, "$frame for the command: the capture still waits for its "
                 . 'result, and times out');
    is($j->{error}{code}, 'capture_timeout', "$frame: capture_timeout");

    my @refused = grep { ($_->{frame}{code} // '') eq 'bad_frame'
                         && ($_->{frame}{request_id} // '') eq ($cmd // '-') }
                  $t->events('error');
    is(scalar @refused, 1, "$frame: the tab is told its frame was refused");
    is($t->status->{totals}{bad_frames}, $bad + 1,
       "$frame: a bad frame counted");
}
my %inflight = map { $_->{id} => $_->{inflight} }
               @{ $t->status->{browsers} // [] };
is_deeply(\%inflight, { mute => 0, spare => 0 },
          'no tab was left holding the command as a task');

# --- a second sidecar on the same browser socket leaves it alone

my $d = $t->dir;
my $cmd = "timeout 5 $ChatBridgeTest::SIDECAR --control $d/second.sock "
          . "--listen unix:$d/ws.sock --token x";
my $second = `$cmd 2>&1`;
is($? >> 8, 1, 'a second sidecar on a live browser socket exits');
like($second, qr/another process is listening on .*ws\.sock/, 'saying why');
ok(-S $t->dir . '/ws.sock', 'and the socket file is still there');
ok($t->wait_browsers(2), 'the browsers still reach the first sidecar');
$r = chat('after the second sidecar');
is($r->{status}, 200, 'which still answers');

# and on the same control socket
$cmd = "timeout 5 $ChatBridgeTest::SIDECAR --control $d/sidecar.sock "
       . "--listen unix:$d/second-ws.sock --token x";
$second = `$cmd 2>&1`;
is($? >> 8, 1, 'a second sidecar on a live control socket exits');
like($second, qr/another process is listening on .*sidecar\.sock/, 'saying why');
ok(-S "$d/sidecar.sock", 'and the socket file is still there');
is(chat('after the third sidecar')->{status}, 200, 'nginx still reaches the first');

# a leftover socket file nobody listens on is taken over
my $left = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => "$d/left.sock",
                                 Listen => 1) or die "left.sock: $!";
close $left;                            # the file stays, nobody listens
$cmd = "timeout 3 $ChatBridgeTest::SIDECAR --control $d/left-ctl.sock "
       . "--listen unix:$d/left.sock --token x --log-level info";
$second = `$cmd 2>&1`;
like($second, qr/ready: .*browsers on unix:\Q$d\E\/left\.sock/,
     'a leftover browser socket file is replaced') or diag($second);

$t->done;
done_testing;
