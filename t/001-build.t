# The module is built the Debian way: same binary signature as
# /usr/sbin/nginx, loads with no compatibility error; the sidecar runs.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Test::More;

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

done_testing;
