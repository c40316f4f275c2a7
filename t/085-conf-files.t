#!/usr/bin/perl

# Every file the module reads while nginx reads its configuration (keys,
# token, userscript, model list, the LMArena files) must be a regular file:
# a FIFO or a directory in its place is refused at once by "nginx -t", with
# the file's name, instead of hanging the master (a FIFO with no writer
# blocks a plain open() for ever).

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest qw(put);
use POSIX qw(mkfifo);
use Test::More;
use Time::HiRes qw(time);

my $t = ChatBridgeTest->new;
my $dir = $t->dir;

mkdir "$dir/arena";
put("$dir/arena/config.jsonc", qq({ "session_id": "s0", "message_id": "m0" }\n));
put("$dir/arena/models.json", qq({ "m": "0000-m" }\n));
put("$dir/arena/model_endpoint_map.json", "{}\n");
put("$dir/good.keys", "alice sk-alice-0123456789\n");
put("$dir/token", "tok-0123456789abcdef\n");
put("$dir/user.js", "// ==UserScript==\n// ==/UserScript==\nconst W = '__CHATBRIDGE_WS_URL__', T = '__CHATBRIDGE_TOKEN__';\n");
put("$dir/models.json", qq({ "data": [{ "id": "m" }] }\n));

# directive => the text that names FILE
my %uses = (
    'chatbridge_api_keys_file' => 'location /a/ { chatbridge; chatbridge_api_keys_file FILE; }',
    'chatbridge_admin_keys_file' => 'location /b/ { chatbridge_status; chatbridge_admin_keys_file FILE; }',
    'chatbridge_browser_token_file' => 'location = /c.js { chatbridge_userscript ' . "$dir/user.js"
        . '; chatbridge_browser_token_file FILE; }',
    'chatbridge_userscript' => 'location = /d.js { chatbridge_userscript FILE; '
        . 'chatbridge_browser_token tok-0123456789abcdef; }',
    'chatbridge_models_file' => 'location /e/ { chatbridge; chatbridge_models_file FILE; }',
);

sub nginx_t {
    my ($server, $http) = @_;
    my $conf = "$dir/t.conf";
    put($conf, $t->nginx_conf(server => $server, http => $http // ''));
    my $t0 = time;
    my $out = qx{timeout 10 $ChatBridgeTest::NGINX -t -p $dir -c $conf -e $dir/t-error.log 2>&1};
    return ($? >> 8, $out, time - $t0);
}

my ($rc, $out) = nginx_t(join "\n", map { s/FILE/$dir\/good.keys/r }
    $uses{chatbridge_api_keys_file}, $uses{chatbridge_admin_keys_file});
is($rc, 0, 'with regular files nginx -t passes') or diag($out);

mkfifo("$dir/fifo", 0600) or die "mkfifo: $!";
mkdir "$dir/adir";

for my $directive (sort keys %uses) {
    for my $what (qw(fifo adir)) {
        my ($rc, $out, $took) = nginx_t($uses{$directive} =~ s/FILE/$dir\/$what/r);
        isnt($rc, 124, "$directive naming a " . ($what eq 'fifo' ? 'FIFO' : 'directory')
             . ': nginx -t does not hang') or next;
        isnt($rc, 0, '... and fails');
        like($out, qr/\Q$dir\/$what\E/, '... naming the file') or diag($out);
    }
}

# chatbridge_key_pool (http level)
for my $what (qw(fifo adir)) {
    my ($rc, $out) = nginx_t('', "chatbridge_key_pool llm $dir/$what;");
    isnt($rc, 124, "chatbridge_key_pool naming a $what: no hang");
    isnt($rc, 0, '... and refused') or diag($out);
}

# the LMArena files: each of the three, a FIFO in its place
for my $name (qw(config.jsonc models.json model_endpoint_map.json)) {
    rename "$dir/arena/$name", "$dir/arena/$name.real" or die;
    mkfifo("$dir/arena/$name", 0600) or die "mkfifo: $!";
    my ($rc, $out) = nginx_t("location /f/ { chatbridge; chatbridge_arena $dir/arena; }");
    isnt($rc, 124, "chatbridge_arena with a FIFO for $name: no hang");
    isnt($rc, 0, '... and refused');
    like($out, qr/\Q$name\E: not a regular file/, '... saying why') or diag($out);
    unlink "$dir/arena/$name";
    rename "$dir/arena/$name.real", "$dir/arena/$name" or die;
}

done_testing;
