# make run: one command starts the sidecar and nginx on the given port,
# prints where to point a client and a browser, serves, and Ctrl-C (SIGINT
# to the foreground process group, as a terminal sends it) stops both.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use POSIX qw(setpgid :sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);

my $rt = tempdir('cbrun-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $port = ChatBridgeTest::free_port();

# the user copied LMArena Bridge's config.jsonc into run/arena/
mkdir "$rt/arena";
open my $cfg, '>', "$rt/arena/config.jsonc" or die;
print $cfg qq({\n  // mine\n  "session_id": "s-1", "message_id": "m-1",\n)
           . qq(  "api_key": "sk-from-the-arena-file",\n}\n);
close $cfg;
my %key = (Authorization => 'Bearer sk-from-the-arena-file');

pipe(my $r, my $w) or die;
my $pid = fork();
if ($pid == 0) {
    setpgid(0, 0);
    close $r;
    open STDOUT, '>&', $w;
    open STDERR, '>&', $w;
    $ENV{CHATBRIDGE_RUNTIME} = $rt;
    exec "$ChatBridgeTest::TOP/util/run.sh", $port or die;
}
close $w;

my $out = '';
my $sel = IO::Select->new($r);
my $deadline = time + 20;
while (time < $deadline && $out !~ /Ctrl-C stops/) {
    last unless $sel->can_read(1) || 1;
    my $n = sysread $r, my $buf, 4096;
    last if defined $n && $n == 0;
    $out .= $buf if $n;
}

like($out, qr{OpenAI base URL\s+http://127\.0\.0\.1:$port/v1}, 'prints the base URL');
like($out, qr{Browser WebSocket\s+ws://127\.0\.0\.1:$port/chatbridge/ws},
     'prints the browser WebSocket URL');
like($out, qr{Status\s+http://127\.0\.0\.1:$port/chatbridge/status},
     'prints the status URL');
like($out, qr{Userscript\s+http://127\.0\.0\.1:$port/chatbridge/chatbridge\.user\.js},
     'prints the userscript URL');
like($out, qr{LMArena files\s+\Q$rt\E/arena \(chatbridge_arena\)},
     'and that it uses the LMArena files it found');
my ($token) = $out =~ /Browser token\s+(\S+)/;
ok($token && length $token >= 16, 'and the browser token');

my $ua = HTTP::Tiny->new(timeout => 5);
is($ua->get("http://127.0.0.1:$port/v1/models")->{status}, 401,
   "config.jsonc's api_key is in force");
is($ua->get("http://127.0.0.1:$port/v1/models", { headers => \%key })->{status},
   200, 'it serves /v1/models');

# the userscript, one click to install, with this bridge baked in
my $us = $ua->get("http://127.0.0.1:$port/chatbridge/chatbridge.user.js");
is($us->{status}, 200, 'the userscript is served');
like($us->{content}, qr{^// ==UserScript==}, 'a userscript');
like($us->{content}, qr{ws://127\.0\.0\.1:$port/chatbridge/ws}, 'with the WebSocket URL');
unlike($us->{content}, qr/__CHATBRIDGE_/, 'and no placeholder left');

# operator commands with the key make run wrote
my $admin = do { local @ARGV = "$rt/admin-key"; <> } // '';
chomp $admin;
ok(length $admin >= 32, 'an admin key in run/admin-key');
is((stat "$rt/admin-key")[2] & 077, 0, 'readable by its owner only');
is((stat "$rt/nginx.conf")[2] & 077, 0, 'as is the generated nginx.conf');
is($ua->post("http://127.0.0.1:$port/chatbridge/admin/capture")->{status},
   401, 'no admin key: 401');
my $cap = $ua->post("http://127.0.0.1:$port/chatbridge/admin/capture", {
    headers => { Authorization => "Bearer $admin",
                 'Content-Type' => 'application/json' },
    content => '{"timeout": 1}' });
is($cap->{status}, 503, 'with it: no tab to capture in yet (503)');
like($cap->{content}, qr/no_capture_browser/, 'says so');

my $st = $ua->get("http://127.0.0.1:$port/chatbridge/status");
like($st->{content}, qr/"link":"ready"/, 'nginx is linked to the sidecar');

# a browser with the printed token gets work
my $bpid = fork();
if ($bpid == 0) {
    exec 'node', "$ChatBridgeTest::TOP/t/lib/fake-browser.mjs", '--url',
         "ws://127.0.0.1:$port/chatbridge/ws", '--token', $token;
}
ok(ChatBridgeTest::wait_for(sub {
       $ua->get("http://127.0.0.1:$port/chatbridge/status")->{content}
           =~ /"state":"ready"/ }, 10), 'a browser connects with that token');

my $res = $ua->post("http://127.0.0.1:$port/v1/chat/completions", {
    headers => { 'Content-Type' => 'application/json', %key },
    content => '{"model":"x","messages":[{"role":"user","content":"hi"}]}' });
is($res->{status}, 200, 'a chat completion works');
like($res->{content}, qr/"content":"echo: hi"/, 'with the answer');

kill 'TERM', $bpid;
waitpid $bpid, 0;

# what make run started
my $nginx = do { local @ARGV = "$rt/nginx.pid"; <> } // '';
chomp $nginx;
ok($nginx && kill(0, $nginx), "nginx runs (pid $nginx)");

# Ctrl-C
kill 'INT', -$pid;
my $stopped = ChatBridgeTest::wait_for(sub { waitpid($pid, WNOHANG) == $pid },
                                       10);
ok($stopped, 'Ctrl-C ends make run');
while (my $n = sysread $r, my $buf, 4096) { $out .= $buf }
like($out, qr/chatbridge stopped/, 'and it says so');
ok(!kill(0, $nginx), 'nginx is gone');
my $sidecar = do { local @ARGV = "$rt/sidecar.pid"; <> } // '';
chomp $sidecar;
ok($sidecar && !kill(0, $sidecar), 'the sidecar is gone');
ok(!-e "$rt/sidecar.sock" && !-e "$rt/ws.sock", 'and its sockets removed');

my $log = do { local (@ARGV, $/) = "$rt/logs/error.log"; <> } // '';
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg');

done_testing;
