# A client that goes away cancels its request: the cancel reaches the
# browser (which aborts its work), the slot is freed, nothing else is hurt.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
$t->start_sidecar;
$t->start_nginx;
$t->start_browser('--concurrency', '1');
ok($t->wait_browsers(1), 'browser connected (one task at a time)');

sub task_for {
    my ($tok) = @_;
    my ($ev) = grep { $_->{messages}[-1]{content} =~ /\Q$tok\E/ }
               $t->events('task');
    return $ev;
}

sub cancelled {
    my ($id) = @_;
    return scalar grep { $_->{request_id} eq $id } $t->events('cancel');
}

# --- a stream the client hangs up on after two events

my $res = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user', content => 'tok-A a b c [[hang-after 2]]' }] },
    close_after => 2);
ok($res->{closed}, 'the client hung up mid-stream');
my $closed_at = time;

my $task = task_for('tok-A');
ok($task, 'the browser had the task');
ok(ChatBridgeTest::wait_for(sub { cancelled($task->{request_id}) }, 2),
   'the cancel reached the browser');
my ($c) = grep { $_->{request_id} eq $task->{request_id} } $t->events('cancel');
ok($c->{t} / 1000 - $closed_at < 1, sprintf('within %.0f ms',
   ($c->{t} / 1000 - $closed_at) * 1000));
is($c->{reason}, 'client_closed', 'reason client_closed');

# --- a non-streaming client that gives up while the browser thinks

my $pid = fork();
if ($pid == 0) {
    # a client with a short timeout
    HTTP::Tiny->new(timeout => 0.7)->post($t->url('/v1/chat/completions'), {
        headers => { 'Content-Type' => 'application/json' },
        content => $t->encode({ model => 'm', messages => [{ role => 'user',
                                content => 'tok-B [[silent]]' }] }) });
    POSIX::_exit(0);
}
waitpid $pid, 0;

ok(ChatBridgeTest::wait_for(sub { my $e = task_for('tok-B');
                                  $e && cancelled($e->{request_id}) }, 3),
   'a non-streaming request is cancelled too');

# --- a queued request is dropped before any browser sees it

$pid = fork();
if ($pid == 0) {
    HTTP::Tiny->new(timeout => 3)->post($t->url('/v1/chat/completions'), {
        headers => { 'Content-Type' => 'application/json' },
        content => $t->encode({ model => 'm', messages => [{ role => 'user',
                                content => 'tok-C [[silent]]' }] }) });
    POSIX::_exit(0);
}
ok(ChatBridgeTest::wait_for(sub { task_for('tok-C') }, 3),
   'tok-C holds the only place');

my $pid2 = fork();
if ($pid2 == 0) {
    HTTP::Tiny->new(timeout => 0.5)->post($t->url('/v1/chat/completions'), {
        headers => { 'Content-Type' => 'application/json' },
        content => $t->encode({ model => 'm', messages => [{ role => 'user',
                                content => 'tok-D queued' }] }) });
    POSIX::_exit(0);
}
ok(ChatBridgeTest::wait_for(sub { ($t->status->{queue}{length} // 0) == 1 },
                            2), 'tok-D waits in the queue');
waitpid $pid2, 0;
ok(ChatBridgeTest::wait_for(sub { ($t->status->{queue}{length} // 1) == 0 },
                            2), 'its client left: it is out of the queue');
waitpid $pid, 0;

ok(ChatBridgeTest::wait_for(sub { my $e = task_for('tok-C');
                                  $e && cancelled($e->{request_id}) }, 3),
   'tok-C cancelled when its client left');
sleep 0.3;
ok(!task_for('tok-D'), 'tok-D never reached the browser');

# --- everything is free, and the browser still works

ok($t->wait_idle && @{ $t->status->{browsers} // [] },
   'no slot, chunk, request or browser place is held');

my $r = $t->http(POST => '/v1/chat/completions', { model => 'm',
                 messages => [{ role => 'user', content => 'after' }] });
is($r->{status}, 200, 'the next request works');

$t->done;
done_testing;
