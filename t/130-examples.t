# Every configuration in nginx-conf/ passes "nginx -t" with Debian's nginx
# and this module: the complete examples as shipped, with only their paths
# and addresses pointed into the test directory, and the snippets as
# included by them.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Test::More;

my $t = ChatBridgeTest->new;
my $dir = $t->dir;
$t->example_files(client_key => 'sk-client-0123456789',
                  admin_key => 'sk-admin-0123456789abcdef');

opendir my $dh, "$ChatBridgeTest::TOP/nginx-conf" or die;
my @all = sort grep { /\.conf$/ } readdir $dh;
closedir $dh;

my %tested;

sub passes {
    my ($what, $conf, @files) = @_;
    my ($rc, $out) = $t->nginx_test(conf => $conf);
    is($rc, 0, "$what passes nginx -t") or diag($out);
    unlike($out, qr/\[warn\]/, 'without a warning') or diag($out);
    $tested{$_}++ for @files;
}

# the one make run uses: its @NAMES@ filled in as util/run.sh does
my $local = do { local (@ARGV, $/) = "$ChatBridgeTest::TOP/nginx-conf/local.conf"; <> };
my %at = (MODULE => $ChatBridgeTest::MODULE, RUNTIME => $dir, PORT => $t->port,
          USER => ($> == 0 ? 'user nobody nogroup;' : ''),
          API_KEYS => 'chatbridge_api_key default sk-test-0123456789;',
          ARENA => '', USERSCRIPT => "$ChatBridgeTest::TOP/build/chatbridge.user.js",
          ADMIN_KEY => 'sk-admin-0123456789abcdef');
$local =~ s{@([A-Z_]+)@}{$at{$1} // "\@$1\@"}ge;
unlike(join('', grep { !/^\s*#/ } split /^/, $local), qr/@[A-Z_]+@/,
       'local.conf: every @NAME@ filled in');
mkdir "$dir/logs";
open my $tok, '>', "$dir/token" or die;
print $tok "tok-0123456789\n";
close $tok;
passes('local.conf (make run)', $local, 'local.conf');

passes('public-tls.conf', $t->example_conf('public-tls.conf'),
       'public-tls.conf', 'chatbridge.conf', 'chatbridge-ws.conf');

passes('node.conf', $t->example_conf('node.conf',
           replace => { '10.0.0.11:8080' => '127.0.0.1:' . $t->port }),
       'node.conf');

passes('front.conf', $t->example_conf('front.conf'),
       'front.conf', 'front-node.conf');

# an http-level include; the API's host name needs DNS, which a test box
# lacks: the address is the only change
my $keys = do { local (@ARGV, $/) = "$ChatBridgeTest::TOP/nginx-conf/upstream-keys.conf"; <> };
$keys =~ s{https://api\.openai\.com}{http://127.0.0.1:9}g;
$keys =~ s{/etc/chatbridge/}{$dir/etc/}g;
$keys =~ s{/var/log/nginx/}{$dir/}g;
open my $fh, '>', "$dir/upstream-keys.conf" or die;
print $fh $keys;
close $fh;
passes('upstream-keys.conf, included in http {}',
       $t->nginx_conf(http => "include $dir/upstream-keys.conf;"),
       'upstream-keys.conf');

is_deeply([ grep { !$tested{$_} } @all ], [], 'every file of nginx-conf/ was tested');

$t->done;
done_testing;
