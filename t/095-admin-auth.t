#!/usr/bin/perl

# The admin endpoints (capture, models) behind keys from
# chatbridge_admin_keys_file: as a Bearer token, as X-Api-Key, and as HTTP
# Basic auth's password (curl -u, a script's URL with credentials); a wrong
# or missing key is refused before the command runs.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest qw(put);
use MIME::Base64 qw(encode_base64);
use Test::More;

my $t = ChatBridgeTest->new;
my $dir = $t->dir . '/arena';
mkdir $dir;

put("$dir/config.jsonc", qq({ "session_id": "s0", "message_id": "m0" }\n));
put("$dir/models.json", qq({ "old-model": "0000-old" }\n));
put("$dir/model_endpoint_map.json", "{}\n");

my $key = 'sk-file-admin-0123456789';
put($t->dir . '/admin.keys', "# operators\nfile-ops $key\n");

$t->start_sidecar('--state-dir', $dir);
$t->start_nginx(
    location => "chatbridge_arena $dir;",
    server => "
        location /chatbridge/admin/ {
            chatbridge_admin;
            chatbridge_admin_keys_file ${\ $t->dir }/admin.keys;
            chatbridge_arena $dir;
        }");

sub capture {
    my (%h) = @_;
    return $t->http(POST => '/chatbridge/admin/capture', { timeout => 2 },
                    \%h);
}

sub basic { 'Basic ' . encode_base64("$_[0]:$_[1]", '') }

# --- refused before the command runs

my $r = capture();
is($r->{status}, 401, 'no key: 401');
is($r->{headers}{'www-authenticate'}, 'Bearer',
   'with a Bearer challenge (an API for chatbridgectl, not a page)');
is($t->decode($r->{content})->{error}{code}, 'invalid_api_key',
   'as an OpenAI-shaped error');

is(capture(Authorization => basic('me', 'sk-file-admin-wrong-000'))->{status},
   401, 'Basic with a wrong password: 401');
is(capture(Authorization => 'Bearer sk-file-admin-wrong-000')->{status}, 401,
   'a wrong Bearer key: 401');
is(capture(Authorization => 'Basic ' . encode_base64('no-colon', ''))
   ->{status}, 401, 'Basic without a password: 401');

# --- the file's key, three ways: each reaches the command (no tab yet)

for my $how (['Bearer', Authorization => "Bearer $key"],
             ['X-Api-Key', 'X-Api-Key' => $key],
             ['Basic', Authorization => basic('anyone', $key)])
{
    my ($name, @h) = @$how;
    $r = capture(@h);
    is($r->{status}, 503, "$name with the file's key: past the key check");
    is(($t->decode($r->{content}) // {})->{error}{code}, 'no_capture_browser',
       "$name: the command ran and found no tab");
}

# --- with a tab: capture and models through Basic auth

$t->start_browser('--id', 'tab', '--kind', 'arena',
                  '--capture', 'cap-s1:cap-m1',
                  '--models', 'new-model=1111-new');
$t->wait_browsers(1);

$r = capture(Authorization => basic('ops', $key));
is($r->{status}, 200, 'capture with Basic auth: 200') or diag($r->{content});
is(($t->decode($r->{content}) // {})->{entry}{session_id}, 'cap-s1',
   'with the captured session');

$r = $t->http(POST => '/chatbridge/admin/models', {},
              { Authorization => basic('ops', $key) });
is($r->{status}, 200, 'models with Basic auth: 200') or diag($r->{content});
is(($t->decode($r->{content}) // {})->{asked}, 1, 'one arena tab asked');

$r = $t->http(POST => '/chatbridge/admin/models', {},
              { Authorization => basic('ops', 'nope-0000000000000') });
is($r->{status}, 401, 'models with a wrong password: 401');

$t->done;
done_testing;
