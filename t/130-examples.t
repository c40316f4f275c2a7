# Every configuration in nginx-conf/ passes "nginx -t" with Debian's nginx
# and this module: the complete examples as shipped, with only their paths
# and addresses pointed into the test directory, and the snippets as
# included by them.  upstream-keys.conf also serves: it sends a key only to
# a server whose certificate a trusted CA issued for the API's name.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest qw(slurp);
use HTTP::Tiny;
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
          ARENA => '', USERSCRIPT => "$ChatBridgeTest::BUILD/chatbridge.user.js",
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

# after a reload, browsers' WebSockets would hold the old workers for as
# long as the tabs stay open: every complete configuration bounds that
for my $f (qw(local.conf public-tls.conf node.conf front.conf)) {
    my $text = slurp("$ChatBridgeTest::TOP/nginx-conf/$f");
    like($text, qr/^worker_shutdown_timeout \d+[sm];$/m,
         "$f sets worker_shutdown_timeout");
}

# an http-level include, as shipped but for its paths; the API's host
# name needs DNS, which a test box lacks: an upstream block of that name
# stands in for it
sub keys_conf {
    my ($file, %o) = @_;
    my $keys = do { local (@ARGV, $/) = "$ChatBridgeTest::TOP/nginx-conf/upstream-keys.conf"; <> };
    $keys =~ s{/etc/chatbridge/}{$dir/etc/}g;
    $keys =~ s{/var/log/nginx/}{$o{logs} // $dir}ge;
    for my $from (sort keys %{ $o{replace} // {} }) {
        $keys =~ s{\Q$from\E}{$o{replace}{$from}}g
            or die "upstream-keys.conf has no \"$from\"";
    }
    open my $fh, '>', $file or die "$file: $!";
    print $fh $keys;
    close $fh;
}
keys_conf("$dir/upstream-keys.conf");
passes('upstream-keys.conf, included in http {}',
       $t->nginx_conf(http => "upstream api.openai.com { server 127.0.0.1:9; }
                               include $dir/upstream-keys.conf;"),
       'upstream-keys.conf');

# --- upstream-keys.conf, serving: the keys go only to a server whose
#     certificate a trusted CA signed for the API's name.  "The API" is a
#     TLS nginx on loopback with a certificate from a CA made here, reached
#     as api.openai.com through an upstream block of that name.

my $pki = "$dir/pki";
mkdir $pki;
sub openssl {
    my $out = qx{openssl @_ 2>&1};
    $? == 0 or die "openssl @_: $out";
}
openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -keyout $pki/ca.key "
        . "-out $pki/ca.pem -subj /CN=chatbridge-test-ca "
        . '-addext basicConstraints=critical,CA:TRUE '
        . '-addext keyUsage=critical,keyCertSign,cRLSign');
for my $name (qw(api.openai.com imposter.example.com)) {
    open my $ext, '>', "$pki/$name.ext" or die;
    print $ext "subjectAltName=DNS:$name\n";
    close $ext;
    openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $pki/$name.key "
            . "-out $pki/$name.csr -subj /CN=$name");
    openssl("x509 -req -in $pki/$name.csr -CA $pki/ca.pem -CAkey $pki/ca.key "
            . "-CAcreateserial -days 2 -out $pki/$name.pem "
            . "-extfile $pki/$name.ext");
}

# an HTTPS server with the certificate for $name that echoes what reached it
sub fake_api {
    my ($name) = @_;
    my $api = ChatBridgeTest->new;
    $api->start_nginx(tls => 1, conf => <<"CONF");
${\ $api->main_conf }
events { worker_connections 64; }
http {
${\ $api->http_paths }
    server {
        listen 127.0.0.1:${\ $api->port } ssl;
        ssl_certificate $pki/$name.pem;
        ssl_certificate_key $pki/$name.key;
        location / {
            default_type application/json;
            return 200 '{"sni":"\$ssl_server_name","auth":"\$http_authorization","uri":"\$request_uri"}';
        }
    }
}
CONF
    return $api;
}

my $api = fake_api('api.openai.com');
my $imposter = fake_api('imposter.example.com');

# the key pool's nginx in front of $to, trusting the CAs in $cas
sub keys_nginx {
    my ($to, $cas) = @_;
    my $k = ChatBridgeTest->new;
    my $port = ChatBridgeTest::free_port();
    keys_conf($k->dir . '/upstream-keys.conf', logs => $k->dir . '/',
              replace => { 'listen 127.0.0.1:5104;' => "listen 127.0.0.1:$port;",
                           $cas ? ('/etc/ssl/certs/ca-certificates.crt' => $cas)
                                : () });
    $k->start_nginx(http => "upstream api.openai.com { server 127.0.0.1:${\ $to->port }; }
                             include ${\ $k->dir }/upstream-keys.conf;");
    my $r = HTTP::Tiny->new(timeout => 10)->post(
        "http://127.0.0.1:$port/v1/chat/completions",
        { headers => { 'Content-Type' => 'application/json' },
          content => '{"model":"m","messages":[]}' });
    $k->done;
    return ($r, $k->log('error'));
}

my ($r, $log) = keys_nginx($api);
is($r->{status}, 502, 'the system CAs (as shipped) do not vouch for a '
   . 'certificate from an unknown CA: 502') or diag($r->{content});
like($log, qr/upstream SSL certificate verify error/,
     'nginx refused the certificate');
is($api->log('access'), '', 'and no request, no key, reached the server');

($r, $log) = keys_nginx($imposter, "$pki/ca.pem");
is($r->{status}, 502, 'a trusted CA, but a certificate for another name: 502')
    or diag($r->{content});
like($log, qr/upstream SSL certificate does not match "api\.openai\.com"/,
     'nginx checked the name');
is($imposter->log('access'), '', 'and nothing reached that server');

($r, $log) = keys_nginx($api, "$pki/ca.pem");
is($r->{status}, 200, "the API's own certificate from a trusted CA: 200")
    or diag($r->{content} . $log);
my $echo = $t->decode($r->{content}) // {};
is($echo->{sni}, 'api.openai.com', "the API's name went as SNI");
is($echo->{auth}, 'Bearer sk-upstream-one-000000', "with the pool's key");
is($echo->{uri}, '/v1/chat/completions', 'to the API\'s path');

$_->done for $api, $imposter;

is_deeply([ grep { !$tested{$_} } @all ], [], 'every file of nginx-conf/ was tested');

$t->done;
done_testing;
