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

# --- the busy tab's request waits for the other tab, which is full; that
#     tab goes away: the client hears the busy tab's reason, not "no browser"

my $full = $t->start_browser('--id', 'full', '--concurrency', '1');
ok($t->wait_browsers(3), 'a third tab, taking one request at a time');

# a request for a model only the tabs without a list serve fills it
my $hold = fork // die;
if ($hold == 0) {
    $t->http(POST => '/v1/chat/completions', { model => 'other-model',
             messages => [{ role => 'user', content => 'hold [[silent]]' }] });
    exit 0;
}
ok(ChatBridgeTest::wait_for(sub {
       grep { ($_->{messages}[0]{content} // q()) =~ /hold/ } $t->events('task') }, 5),
   'a tab holds a silent request');
my ($holder) = map { $_->{browser} }
               grep { ($_->{messages}[0]{content} // q()) =~ /hold/ } $t->events('task');
# the other tab without a list goes: only "only" and the full one remain
$t->stop_browser($holder eq 'full' ? $t->{browsers}[1]{pid} : $full);
my $left = $holder eq 'full' ? $full : $t->{browsers}[1]{pid};
ok($t->wait_browsers(2), 'two tabs left: the busy one and the full one');

my $asked = fork // die;
if ($asked == 0) {
    my $r = chat("third [[busy-once $dir/b3]]");
    ChatBridgeTest::put("$dir/third.json", $t->encode({ status => $r->{status},
                                                       body => $r->{content} }));
    exit 0;
}
ok(ChatBridgeTest::wait_for(sub {
       grep { ($_->{messages}[0]{content} // q()) =~ /third/ } $t->events('task') }, 5),
   'the busy tab was asked and refused');
ok(ChatBridgeTest::wait_for(sub { ($t->status->{queue}{length} // 0) == 1 }, 5),
   'the request waits for the full tab');
$t->stop_browser($left);
waitpid $asked, 0;
my $third = $t->decode(ChatBridgeTest::slurp("$dir/third.json"));
is($third->{status}, 503, 'that tab gone: 503');
is(($t->decode($third->{body}) // {})->{error}{code}, 'busy', "the busy tab's own reason")
    or diag($third->{body});
like(($t->decode($third->{body}) // {})->{error}{message} // '', qr/scripted busy/,
     'in its words');
kill 'TERM', $hold;
waitpid $hold, 0;

$t->done;
done_testing;
