# Faults: the sidecar killed mid-stream, nginx reloaded mid-stream, a
# browser dropping mid-stream or before its first token, an nginx worker
# killed.  In-flight requests complete or fail clearly within a second or
# two; the next request works; nothing leaks.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Test::More;
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
$t->start_sidecar;
$t->start_nginx;
$t->start_browser('--id', 'alpha');
ok($t->wait_browsers(1), 'browser connected');

my $slow = 'one two three four five six seven eight nine ten [[gap 250]]';

# --- the sidecar is killed with -9 while a stream is running

my ($killed_at, $err_at);
my $res = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user', content => $slow }] },
    timeout => 10,
    on_event => sub {
        my ($ev) = @_;
        if (!$killed_at && $ev =~ /"content":"two /) {
            $t->kill_sidecar('KILL');
            $killed_at = time;
        }
        $err_at //= time if $ev =~ /"error"/;
    });

is($res->{status}, 200, 'the stream had started');
my @d = $t->sse_data($res);
my ($err) = grep { ref && $_->{error} } @d;
is($err->{error}{code}, 'bridge_unavailable', 'the client got an error event');
is($d[-1], '[DONE]', 'and [DONE]');
ok($killed_at && $err_at && $err_at - $killed_at < 2,
   sprintf('within 2 s of the kill (%.0f ms)', ($err_at - $killed_at) * 1000));

$t->start_sidecar;
ok($t->wait_browsers(1, 10), 'the browser reconnected to the new sidecar');
ok(ChatBridgeTest::wait_for(sub {
       my $s = $t->status;
       ($s->{link} // '') eq 'ready' && @{ $s->{workers} // [] } == 2 }, 5),
   'both workers linked to the new sidecar without a reload');

my $r = $t->http(POST => '/v1/chat/completions', { model => 'm',
                 messages => [{ role => 'user', content => 'after restart' }] });
is($r->{status}, 200, 'the next request works');
is($t->decode($r->{content})->{choices}[0]{message}{content},
   'echo: after restart', 'with its answer');

# --- nginx reloads while a stream is running: the stream completes

my $reloaded;
$res = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user', content => $slow }] },
    timeout => 15,
    on_event => sub {
        if (!$reloaded && $_[0] =~ /"content":"two /) {
            $t->reload_nginx;
            $reloaded = 1;
        }
    });

ok($reloaded, 'nginx was reloaded mid-stream');
is($t->sse_text($res), 'echo: one two three four five six seven eight nine '
   . 'ten', 'the stream completed with the whole answer');
is(($t->sse_data($res))[-1], '[DONE]', 'and [DONE]');
like($t->log('error'), qr/reconfiguring/, 'the reload happened');

ok(ChatBridgeTest::wait_for(sub {
       my $r = $t->http(POST => '/v1/chat/completions', { model => 'm',
                        messages => [{ role => 'user', content => 'hi' }] });
       $r->{status} == 200 }, 5), 'the new workers answer');

# --- the browser drops mid-stream: the client hears about it at once

my $dropped_at;
$res = $t->raw(POST => '/v1/chat/completions', {
    model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user',
                   content => 'a b c d e f [[gap 100]] [[close-after 3]]' }] },
    timeout => 10,
    on_event => sub { $dropped_at //= time if $_[0] =~ /"error"/ });
($err) = grep { ref && $_->{error} } $t->sse_data($res);
is($err->{error}{code}, 'browser_disconnected',
   'browser gone mid-stream: an error event');
my ($closing) = grep { $_->{event} eq 'closing' } $t->events;
my $after = defined $dropped_at && $closing
            ? $dropped_at - $closing->{t} / 1000 : -1;
ok($after >= -0.05, 'the error event came, after the close (clocks within 50 ms)');
ok($after < 1, sprintf('within 1 s of the drop (%.0f ms)', $after * 1000));
ok($t->wait_browsers(1, 10), 'the browser reconnects');

# --- a browser drops before its first token: another one answers

$t->start_browser('--id', 'beta');
ok($t->wait_browsers(2, 10), 'a second browser');

my $marker = $t->dir . '/dropped';
$r = $t->http(POST => '/v1/chat/completions', { model => 'm',
              messages => [{ role => 'user',
                             content => "retry me [[close-once $marker]]" }] });
is($r->{status}, 200, 'the request survived its browser');
is($t->decode($r->{content})->{choices}[0]{message}{content},
   'echo: retry me', 'answered');
my @tasks = grep { $_->{messages}[-1]{content} =~ /retry me/ }
            $t->events('task');
is(scalar(@tasks), 2, 'two attempts');
my ($drop) = grep { $_->{event} eq 'closing'
                    && $_->{request_id} eq $tasks[0]{request_id} } $t->events;
is($drop->{browser}, $tasks[0]{browser}, 'the first browser dropped it');
isnt($tasks[1]{browser}, $tasks[0]{browser}, 'the other browser answered');
is($tasks[1]{request_id}, $tasks[0]{request_id}, 'the same request');
ok($t->wait_browsers(2, 10), 'the dropped browser is back');

# --- an nginx worker is killed: the sidecar reclaims its slots
#
# Browsers that reach the sidecar through nginx could be proxied by the
# worker we kill; the one that takes this request connects directly.

$t->expect_alert(qr/exited on signal 9/);

$t->stop_browser($_->{pid}) for @{ $t->{browsers} };
$t->start_browser('direct', '--id', 'direct');
ok(ChatBridgeTest::wait_for(sub {
       my @b = @{ $t->status->{browsers} // [] };
       @b == 1 && $b[0]{id} eq 'direct' }, 10),
   'one browser, connected straight to the sidecar');

my $pid = fork();
if ($pid == 0) {
    HTTP::Tiny->new(timeout => 5)->post($t->url('/v1/chat/completions'), {
        headers => { 'Content-Type' => 'application/json' },
        content => $t->encode({ model => 'm', messages => [{ role => 'user',
                                content => 'tok-W [[silent]]' }] }) });
    POSIX::_exit(0);
}

my $task;
ok(ChatBridgeTest::wait_for(sub {
       ($task) = grep { $_->{messages}[-1]{content} =~ /tok-W/ }
                 $t->events('task');
       $task }, 3), 'a request is in flight');

# which worker holds it: the one whose counters show it
my $victim;
ok(ChatBridgeTest::wait_for(sub {
       ($victim) = map { $_->{pid} }
                   grep { $_->{requests} > $_->{completed} + $_->{failed}
                                           + $_->{cancelled} }
                   @{ $t->status->{workers} // [] };
       $victim }, 3), "worker $victim holds it");

my $before = $t->status->{totals}{reclaimed_slots} // 0;
kill 'KILL', $victim;

ok(ChatBridgeTest::wait_for(sub {
       ($t->status->{totals}{reclaimed_slots} // 0) > $before }, 3),
   'the sidecar reclaimed the dead worker\'s slot');
ok(ChatBridgeTest::wait_for(sub {
       grep { $_->{request_id} eq $task->{request_id} } $t->events('cancel') },
       3), 'and told the browser to stop');
waitpid $pid, 0;

ok($t->wait_idle, 'nothing is left in use');

ok(ChatBridgeTest::wait_for(sub {
       my $r = $t->http(POST => '/v1/chat/completions', { model => 'm',
                        messages => [{ role => 'user', content => 'hi' }] });
       $r->{status} == 200 }, 5), 'the respawned worker answers');

$t->done;

# --- a reload while a browser is connected through nginx: its WebSocket
#     holds an old worker until worker_shutdown_timeout (the shipped
#     configurations set one), then the browser comes back on a new worker

my $u = ChatBridgeTest->new;
$u->start_sidecar;
$u->start_nginx(shutdown_timeout => '2s');
$u->start_browser('--id', 'tab');
$u->wait_browsers(1);
my %old = map { $_ => 1 } $u->worker_pids;
$u->reload_nginx;
ok(scalar(grep { $old{$_} } $u->worker_pids),
   'right after the reload the browser holds an old worker');
ok(ChatBridgeTest::wait_for(sub { !grep { $old{$_} } $u->worker_pids }, 5),
   'which exits after worker_shutdown_timeout');
ok(ChatBridgeTest::wait_for(sub {
       my $r = $u->http(POST => '/v1/chat/completions', { model => 'm',
                        messages => [{ role => 'user', content => 'back' }] });
       $r->{status} == 200 }, 10), 'the browser came back and answers');
$u->done;

done_testing;
