# Limits and logs per key, the nginx way: limit_req and limit_conn keyed by
# $chatbridge_key_name count each client key on its own (the variable is
# known before the content handler runs), their rejections are OpenAI
# errors, and the documented log format fills every chatbridge variable.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
my $dir = $t->dir;
my %key = (alice => 'sk-alice-0123456789', bob => 'sk-bob-0123456789');

# the log format of docs/CONFIG.md ("A log format"), as shipped
my $config = do { local (@ARGV, $/) = "$ChatBridgeTest::TOP/docs/CONFIG.md"; <> };
my ($format) = $config =~ /```nginx\n(log_format chatbridge .*?;)\n```/s;
ok($format, 'docs/CONFIG.md shows a log format');

$t->start_sidecar;
$t->start_nginx(
    http => "limit_req_zone \$chatbridge_key_name zone=perkey:1m rate=1r/m;
             limit_conn_zone \$chatbridge_key_name zone=conns:1m;
             $format",
    location => "chatbridge_api_key alice $key{alice};
                 chatbridge_api_key bob $key{bob};
                 access_log $dir/chatbridge.log chatbridge;",
    server => "
        location /rate/v1/ {
            chatbridge;
            chatbridge_api_key alice $key{alice};
            chatbridge_api_key bob $key{bob};
            limit_req zone=perkey burst=1 nodelay;
            limit_req_status 429;
        }
        location /conn/v1/ {
            chatbridge;
            chatbridge_api_key alice $key{alice};
            chatbridge_api_key bob $key{bob};
            limit_conn conns 1;
        }");
$t->start_browser('--concurrency', '8');
$t->wait_browsers(1);

sub chat {
    my ($path, $who, $text) = @_;
    return $t->http(POST => "$path/chat/completions",
                    { model => 'm', messages => [{ role => 'user', content => $text }] },
                    { Authorization => "Bearer $key{$who}" });
}

# --- limit_req per key: a burst of 1 on top of 1 per minute

is(chat('/rate/v1', 'alice', 'a1')->{status}, 200, 'alice: first');
is(chat('/rate/v1', 'alice', 'a2')->{status}, 200, 'alice: second (the burst)');
my $r = chat('/rate/v1', 'alice', 'a3');
is($r->{status}, 429, 'alice: third is over her limit');
my $e = $t->decode($r->{content});
is($e->{error}{code}, 'rate_limit_exceeded', 'as an OpenAI error');
like($r->{headers}{'content-type'}, qr{^application/json}, 'in JSON');
is(chat('/rate/v1', 'bob', 'b1')->{status}, 200, 'bob has his own count');
is($t->http(POST => '/rate/v1/chat/completions', '{}')->{status}, 401,
   'no key: 401, not counted against anyone');

# --- limit_conn per key: one stream at a time

sub open_stream {
    my ($who, $text) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port)
        or die;
    my $body = $t->encode({ model => 'm', stream => \1,
                            messages => [{ role => 'user', content => $text }] });
    $s->syswrite("POST /conn/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 . "Authorization: Bearer $key{$who}\r\n"
                 . "Content-Type: application/json\r\n"
                 . "Content-Length: " . length($body) . "\r\n\r\n$body");
    return $s;
}

my $held = open_stream('alice', 'hold [[delay 3000]]');
ok(ChatBridgeTest::wait_for(sub { ($t->status->{requests}{active} // 0) >= 1 }, 5),
   'alice holds a stream');
$r = $t->http(POST => '/conn/v1/chat/completions',
              { model => 'm', messages => [{ role => 'user', content => 'x' }] },
              { Authorization => "Bearer $key{alice}" });
is($r->{status}, 503, 'alice: a second at once is refused');
is($t->decode($r->{content})->{error}{code}, 'service_unavailable', 'as an OpenAI error');
$r = $t->http(POST => '/conn/v1/chat/completions',
              { model => 'm', messages => [{ role => 'user', content => 'y' }] },
              { Authorization => "Bearer $key{bob}" });
is($r->{status}, 200, 'bob is not held back by alice');
close $held;

# --- the documented log format

$r = $t->http(POST => '/v1/chat/completions',
              { model => 'logged-model', stream => \1,
                messages => [{ role => 'user', content => 'log me [[usage 11 7]] [[delay 50]]' }] },
              { Authorization => "Bearer $key{bob}" });
is($r->{status}, 200, 'a logged stream');
my $id = $r->{headers}{'x-request-id'};
my $line;
ChatBridgeTest::wait_for(sub {
    ($line) = grep { /\Q$id\E/ } split /\n/, $t->log('chatbridge');
    $line }, 5);
ok($line, 'its access log line') or diag($t->log('chatbridge'));
like($line, qr/key=bob\b/, 'the key name');
like($line, qr/model="logged-model"/, 'the model');
like($line, qr/id=\Q$id\E/, 'the request id');
like($line, qr/browser=\S+/, 'the browser');
like($line, qr/ttft=\d+/, 'the time to first token');
like($line, qr/tokens=11\+7/, 'prompt and completion tokens');
like($line, qr/finish=stop/, 'the finish reason');
like($line, qr/outcome=ok/, 'the outcome');
unlike($line, qr/sk-bob/, 'never the key itself');

$t->done;
done_testing;
