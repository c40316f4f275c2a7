# The module is built the Debian way: same binary signature as
# /usr/sbin/nginx, loads with no compatibility error; the sidecar runs.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Test::More;
use Time::HiRes qw(sleep);

sub signature {
    my ($file) = @_;
    open my $fh, '<:raw', $file or die "$file: $!";
    local $/;
    my $bin = <$fh>;
    my ($sig) = $bin =~ /(\d+,\d+,\d+,[01]{20,})/;
    return $sig;
}

my $nginx_sig = signature($ChatBridgeTest::NGINX);
my $module_sig = signature($ChatBridgeTest::MODULE);

ok($nginx_sig, "nginx has a module signature ($nginx_sig)");
is($module_sig, $nginx_sig, 'the module has the same signature');

my $t = ChatBridgeTest->new;
open my $fh, '>', $t->dir . '/t.conf' or die;
print $fh "load_module $ChatBridgeTest::MODULE;\n"
    . "error_log stderr;\npid " . $t->dir . "/nginx.pid;\n"
    . "events {}\nhttp { server { listen 127.0.0.1:" . $t->port . ";\n"
    . "location /v1/ { chatbridge; } } }\n";
close $fh;

my $out = `$ChatBridgeTest::NGINX -t -p ${\ $t->dir} -c ${\ $t->dir}/t.conf 2>&1`;
is($?, 0, 'nginx -t accepts a configuration that loads the module')
    or diag($out);
unlike($out, qr/not binary compatible/, 'no binary-compatibility error');

my $help = `$ChatBridgeTest::SIDECAR --help`;
is($?, 0, 'chatbridge-sidecar --help exits 0');
like($help, qr/--token/, 'and lists its options');

my $bad = `$ChatBridgeTest::SIDECAR --control /tmp/x.sock 2>&1`;
isnt($?, 0, 'the sidecar refuses to start without a browser token');
like($bad, qr/token/, 'and says why');

# a system nginx that loads the module for one site does not look for the
# sidecar when no location talks to it
my $q = ChatBridgeTest->new;
my $user = $> == 0 ? 'user nobody nogroup;' : '';
$q->start_nginx(conf => "load_module $ChatBridgeTest::MODULE;
$user
daemon off;
pid ${\ $q->dir }/nginx.pid;
error_log ${\ $q->dir }/error.log info;
events {}
http {
    client_body_temp_path ${\ $q->dir }/tmp/body;
    proxy_temp_path ${\ $q->dir }/tmp/proxy;
    chatbridge_sidecar ${\ $q->dir }/nowhere.sock;
    server { listen 127.0.0.1:${\ $q->port }; location / { return 204; } }
}");
sleep 1.5;
unlike($q->log('error'), qr/sidecar/, 'no location needs the sidecar: no attempt to reach it');
$q->done;

# --config: JSON with comments and trailing commas, as Debian's
# /etc/chatbridge/sidecar.conf; errors name the file, line and column
my $cfg = $t->dir . '/sidecar.conf';
open $fh, '>', $cfg or die;
print $fh "{\n    // where nginx finds us\n"
    . "    \"control\": \"${\ $t->dir }/cfg.sock\",\n"
    . "    \"listen\": \"unix:${\ $t->dir }/cfg-ws.sock\", /* browsers */\n"
    . "    \"token\": \"tok-from-config\",\n}\n";
close $fh;
my $pid = $t->spawn('cfg-sidecar', $t->dir . '/cfg.log', $ChatBridgeTest::SIDECAR,
                    '--config', $cfg);
ok(ChatBridgeTest::wait_for(sub { -S $t->dir . '/cfg.sock' }, 5),
   'the sidecar starts from a commented config file');

# it listens where the file says, and takes the file's token, not another
for my $try (['tok-from-config', 'ready'], [$t->token, 'refused']) {
    my ($token, $want) = @$try;
    my $log = $t->dir . "/cfg-browser-$want.log";
    my $b = $t->spawn('cfg-browser', "$log.out", 'node',
                      "$ChatBridgeTest::TOP/t/lib/fake-browser.mjs",
                      '--url', 'ws+unix://' . $t->dir . '/cfg-ws.sock:/chatbridge/ws',
                      '--token', $token, '--log', $log);
    my $state;
    ChatBridgeTest::wait_for(sub {
        ($state) = grep { /"state":"(ready|closed|refused)"/ }
                   split /\n/, $t->log($log);
        $state }, 10);
    like($state // '', qr/"state":"$want"/,
         $want eq 'ready' ? 'a browser with the token from --config is let in'
                          : 'a browser with another token is turned away')
        or diag($t->log($log) . $t->log('cfg'));
    like($state // '', qr/"code":4401/, 'with 4401') if $want eq 'refused';
    $t->stop_browser($b);
}
kill 'TERM', $pid;
waitpid $pid, 0;
delete $t->{pids}{$pid};

open $fh, '>', $cfg or die;
print $fh "{\n  // broken\n  \"token\": \"x\"\n  \"listen\": \"y\"\n}\n";
close $fh;
$bad = `$ChatBridgeTest::SIDECAR --config $cfg 2>&1`;
isnt($?, 0, 'a broken config file is refused');
like($bad, qr/\Q$cfg\E:4:\d+/, 'naming the file, line and column') or diag($bad);

done_testing;
