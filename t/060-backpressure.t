# A client that stops reading holds the whole chain back instead of filling
# memory: nginx stops reading the slot's ring, the ring fills, the sidecar
# queues a little and tells the browser to pause; when the client reads
# again, everything arrives, in order, and the browser is told to resume.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Test::More;
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
$t->start_sidecar;
$t->start_nginx(listen => 'sndbuf=8k');
$t->start_browser;
ok($t->wait_browsers(1), 'browser connected');

my $size = 4_000_000;
my $payload = $t->encode({ model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user',
                   content => "[[big $size]] [[chunks 4000]]" }] });

my $s = IO::Socket::INET->new(Proto => 'tcp') or die;
setsockopt($s, SOL_SOCKET, SO_RCVBUF, pack('i', 4096));
$s->connect(Socket::pack_sockaddr_in($t->port, Socket::inet_aton('127.0.0.1')))
    or die "connect: $!";
$s->syswrite("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
             . "Connection: close\r\nContent-Type: application/json\r\n"
             . "Content-Length: " . length($payload) . "\r\n\r\n$payload");

# read nothing for a while
ok(ChatBridgeTest::wait_for(sub { scalar $t->events('pause') }, 5),
   'the browser was told to pause');
ok(ChatBridgeTest::wait_for(sub { ($t->status->{totals}{ring_full} // 0) > 0 },
                            3), 'the slot\'s ring was found full');
sleep 1;
my $rss = `ps -o rss= -p ${\ $t->{sidecar}}` + 0;
ok($rss < 60_000, "the sidecar holds the backlog in bounded memory "
   . "($rss KB RSS)");

# now read it all
my $raw = '';
my $sel = IO::Select->new($s);
my $deadline = time + 60;
while (time < $deadline && $sel->can_read(5)) {
    my $n = $s->sysread(my $buf, 262144);
    last unless $n;
    $raw .= $buf;
}
close $s;

my ($head, $body) = split /\r\n\r\n/, $raw, 2;
like($head, qr{^HTTP/1.1 200}, 'status 200');
my $text = $t->sse_body_text(ChatBridgeTest::dechunk($body));
is(length $text, $size, "all $size bytes arrived");
my $unit = 'chatbridge-0123456789-';
my $want = substr($unit x (int($size / length $unit) + 1), 0, $size);
ok($text eq $want, 'in order, nothing lost or repeated');
like($body, qr/data: \[DONE\]/, 'and [DONE]');

ok(ChatBridgeTest::wait_for(sub { scalar $t->events('resume') }, 3),
   'the browser was told to resume');
is(scalar($t->events('protocol_error')), 0, 'no protocol error on the way');

ok(ChatBridgeTest::wait_for(sub {
       ($t->status->{shm}{slots}{in_use} // -1) == 0 }, 3),
   'the slot is free');

# --- a browser that ignores pause: past a bound, the request is failed
#     explicitly instead of buffering without end

$payload = $t->encode({ model => 'm', stream => JSON::PP::true,
    messages => [{ role => 'user',
                   content => '[[big 12000000]] [[chunks 6000]] '
                              . '[[ignore-pause]]' }] });
$s = IO::Socket::INET->new(Proto => 'tcp') or die;
setsockopt($s, SOL_SOCKET, SO_RCVBUF, pack('i', 4096));
$s->connect(Socket::pack_sockaddr_in($t->port, Socket::inet_aton('127.0.0.1')))
    or die "connect: $!";
$s->syswrite("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
             . "Connection: close\r\nContent-Type: application/json\r\n"
             . "Content-Length: " . length($payload) . "\r\n\r\n$payload");

ok(ChatBridgeTest::wait_for(sub {
       grep { ($_->{reason} // '') eq 'client_too_slow' } $t->events('cancel')
   }, 10), 'the browser is cancelled with reason client_too_slow');

$raw = '';
$sel = IO::Select->new($s);
while ($sel->can_read(5)) {
    my $n = $s->sysread(my $buf, 262144);
    last unless $n;
    $raw .= $buf;
}
close $s;
($head, $body) = split /\r\n\r\n/, $raw, 2;
$body = ChatBridgeTest::dechunk($body);
like($body, qr/"code":"client_too_slow"/,
     'the client gets an error event saying why');
like($body, qr/data: \[DONE\]\n\n$/, 'then [DONE]');
ok(ChatBridgeTest::wait_for(sub {
       ($t->status->{shm}{slots}{in_use} // -1) == 0 }, 3),
   'the slot is free again');

$t->done;
done_testing;
