# A tab that cannot take a task now (busy, needs a human) hands it back:
# the sidecar gives it to another tab, never to the same one again, and
# with no other tab the client hears the tab's own reason at once.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Test::More;

my $t = ChatBridgeTest->new;
my $dir = $t->dir;
$t->start_sidecar;
$t->start_nginx;
# it names the model, so dispatch prefers it to any tab that does not
$t->start_browser('--id', 'only', '--models', 'm');
ok($t->wait_browsers(1), 'one browser');

sub chat {
    my ($text) = @_;
    return $t->http(POST => '/v1/chat/completions',
                    { model => 'm', messages => [{ role => 'user', content => $text }] });
}

# --- one tab, busy: not asked twice

my $r = chat("first [[busy-once $dir/b1]]");
is($r->{status}, 503, 'the only tab is busy: 503');
is($t->decode($r->{content})->{error}{code}, 'busy', "with the tab's reason");
ok($r->{headers}{'retry-after'}, 'and Retry-After');
my @tasks = grep { ($_->{messages}[0]{content} // q()) =~ /first/ } $t->events('task');
is(scalar @tasks, 1, 'the tab was asked once, not again after saying busy');

# --- two tabs: the other one answers, though the busy tab, which names the
#     model, would win every tiebreak: only its refusal keeps it out

$t->start_browser('--id', 'other');
ok($t->wait_browsers(2), 'two browsers');

$r = chat("second [[busy-once $dir/b2]]");
is($r->{status}, 200, 'one tab busy, the other answers');
like($r->{content}, qr/echo: second/, 'with the answer');
@tasks = grep { ($_->{messages}[0]{content} // q()) =~ /second/ } $t->events('task');
is(scalar @tasks, 2, 'two tasks: the busy one and the retry');
is($tasks[0]{browser}, 'only', 'the tab that names the model first');
is($tasks[1]{browser}, 'other', 'then the other tab, not the busy one again');

$t->done;
done_testing;
