# The configuration reference stays true: every directive in the module's
# command table and every sidecar option is documented in docs/CONFIG.md,
# and every variable the module defines is listed there.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest qw(slurp);
use Test::More;

my $top = $ChatBridgeTest::TOP;

my $doc = slurp("$top/docs/CONFIG.md");
my $src = join '', map { slurp($_) } glob "$top/ngx_chatbridge_module/ngx_http_*.c";

my @directives = $src =~ /\{\s*ngx_string\("(chatbridge[a-z_]*)"\),\s*NGX_HTTP/g;
ok(@directives >= 15, scalar(@directives) . ' directives found');
for my $d (@directives) {
    like($doc, qr/^### \Q$d\E$/m, "directive $d is documented");
}

my @vars = $src =~ /\{\s*ngx_string\("(chatbridge_[a-z_]+)"\),\s*NULL/g;
ok(@vars >= 8, scalar(@vars) . ' variables found');
for my $v (@vars) {
    like($doc, qr/\$\Q$v\E\b/, "variable \$$v is documented");
}

my @options = `$ChatBridgeTest::SIDECAR --help` =~ /^  --([a-z-]+)/mg;
ok(@options >= 20, scalar(@options) . ' sidecar options found');
for my $o (@options) {
    like($doc, qr/`--\Q$o\E`/, "sidecar option --$o is documented");
}

done_testing;
