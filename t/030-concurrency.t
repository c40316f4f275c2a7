# 100 requests at once, each with its own prompt, half of them streaming:
# every client gets exactly its own answer, however the browsers interleave.
# Then the slots are all free again.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Test::More;

my $t = ChatBridgeTest->new;
$t->start_sidecar('--per-browser', '64');
$t->start_nginx;
$t->start_browser('--id', 'left', '--concurrency', '64');
$t->start_browser('--id', 'right', '--concurrency', '64');
ok($t->wait_browsers(2), 'two browsers connected');

my @bodies = map {
    my $tok = sprintf 'token-%03d-%08x', $_, int(rand(2**32));
    { model => 'm', stream => ($_ % 2 ? JSON::PP::true : JSON::PP::false),
      messages => [{ role => 'system', content => "system $_" },
                   { role => 'user', content => "$tok [[gap 5]]" }] }
} 1 .. 100;

my @res = $t->concurrent(@bodies);

my ($ok, $own) = (0, 0);
for my $i (0 .. $#bodies) {
    my $r = $res[$i];
    my $want = 'echo: ' . ($bodies[$i]{messages}[1]{content} =~ s/ \[\[.*//r);
    $ok++ if ($r->{status} // 0) == 200;
    my $text = $bodies[$i]{stream}
             ? $t->sse_body_text($r->{body})
             : ($t->decode($r->{body}) // {})->{choices}[0]{message}{content};
    if (defined $text && $text eq $want) {
        $own++;
    } else {
        diag("request $i got: " . ($text // '(nothing)') . " want $want");
    }
}

is($ok, 100, 'all 100 answered 200');
is($own, 100, 'each got exactly its own answer');

my %by_browser;
$by_browser{ $_->{browser} }++ for $t->events('task');
ok(($by_browser{left} // 0) > 10 && ($by_browser{right} // 0) > 10,
   "the load was spread: left $by_browser{left}, right $by_browser{right}");

ok($t->wait_idle,
   'afterwards no slot, chunk, request or browser place is left in use');

$t->done;
done_testing;
