# Upstream key rotation, the nginx way: a location that proxies to an LLM API
# with the Authorization header from $chatbridge_upstream_key.  Keys go round
# robin across workers; a key the upstream answers 401, 403 or 429 rests for
# the pool's cooldown or its Retry-After; a refused call is retried once with
# the next key through error_page; when every key rests the client gets 429;
# the streams pass untouched; the client keys of the location guard it; the
# key material never reaches a log; a reload keeps the cooldowns.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest qw(put);
use HTTP::Tiny;
use Test::More;
use Time::HiRes qw(time sleep);

my $t = ChatBridgeTest->new;
my $dir = $t->dir;

my %key = (alpha => 'sk-alpha-' . 'a' x 24, two => 'sk-two-' . 'b' x 24,
           gamma => 'sk-gamma-' . 'c' x 24);
my %label = ($key{alpha} => 'alpha', $key{two} => 'llm#2',
             $key{gamma} => 'gamma');

put("$dir/llm.keys", <<"KEYS");
# the team's keys
alpha   $key{alpha}

$key{two}
gamma\t$key{gamma}
KEYS

my $mock = $t->start_mock_llm('--chunk-delay', '2');
my $client = 'sk-client-0123456789';

my $proxy = <<"LOC";
            proxy_pass http://127.0.0.1:$mock/v1/;
            proxy_set_header Authorization "Bearer \$chatbridge_upstream_key";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            access_log $dir/keys.log keys;
LOC

my %conf = (
    http => "chatbridge_key_pool llm $dir/llm.keys cooldown=2s;
             log_format keys '\$request_uri \$status key=\$chatbridge_upstream_key_name "
             . "client=\$chatbridge_key_name';",
    server => "
        location /upstream/v1/ {
            chatbridge_upstream_key_pool llm;
$proxy
        }
        location /retry/v1/ {
            chatbridge_upstream_key_pool llm;
$proxy
            proxy_intercept_errors on;
            error_page 401 403 429 = \@next_key;
        }
        location \@next_key {
            chatbridge_upstream_key_pool llm;
            rewrite ^/retry/v1/(.*)\$ /v1/\$1 break;
            proxy_pass http://127.0.0.1:$mock;
            proxy_set_header Authorization \"Bearer \$chatbridge_upstream_key\";
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            access_log $dir/keys.log keys;
        }
        location /guarded/v1/ {
            chatbridge_upstream_key_pool llm;
            chatbridge_api_key app $client;
$proxy
        }
        location /down/v1/ {
            chatbridge_upstream_key_pool llm;
            proxy_pass http://127.0.0.1:${\ ChatBridgeTest::free_port() }/v1/;
            proxy_set_header Authorization \"Bearer \$chatbridge_upstream_key\";
        }");

$t->start_nginx(%conf);

my $mock_http = HTTP::Tiny->new(timeout => 10);
my $mock_url = "http://127.0.0.1:$mock";

sub calls {
    my $r = $mock_http->get("$mock_url/__mock/calls");
    return $t->decode($r->{content}) // [];
}

sub behave {
    $mock_http->post("$mock_url/__mock/behaviour", {
        headers => { 'Content-Type' => 'application/json' },
        content => $t->encode($_[0]) });
}

sub reset_mock { $mock_http->post("$mock_url/__mock/reset") }

sub chat {
    my ($path, $text, %o) = @_;
    return $t->http(POST => "$path/chat/completions",
                    { model => 'mock-model', stream => $o{stream} ? \1 : \0,
                      messages => [{ role => 'user', content => $text }] },
                    $o{headers});
}

sub keys_used { [ map { $label{ $_->{key} // '' } // "?$_->{key}" } @{ calls() } ] }

# --- round robin over the three keys, across two workers

for my $i (1 .. 6) {
    my $r = chat('/upstream/v1', "hello $i");
    is($r->{status}, 200, "request $i answered") or diag($r->{content});
}

my $used = keys_used();
is(scalar @$used, 6, 'six upstream calls');
my %count;
$count{$_}++ for @$used;
is_deeply(\%count, { alpha => 2, 'llm#2' => 2, gamma => 2 },
          'each key used twice') or diag("@$used");
ok(!(grep { $used->[$_] eq $used->[$_ - 1] } 1 .. $#$used),
   'never the same key twice in a row') or diag("@$used");
is_deeply([ @$used[3 .. 5] ], [ @$used[0 .. 2] ], 'in a fixed order')
    or diag("@$used");

# --- the answer passes untouched, streaming or not

reset_mock();
my $r = chat('/upstream/v1', 'stream me', stream => 1);
is($r->{status}, 200, 'a stream');
like($r->{headers}{'content-type'}, qr{^text/event-stream}, 'as SSE');
my $text = join '', map {
    my $d = $t->decode($_);
    $d ? ($d->{choices}[0]{delta}{content} // '') : ''
} grep { $_ ne '[DONE]' } map { /^data: (.*)$/ ? $1 : () } split /\n/, $r->{content};
is($text, calls()->[0]{answer}, 'the text the upstream streamed');
like($r->{content}, qr/data: \[DONE\]\n\n\z/, 'ending as the upstream ended');

$r = chat('/upstream/v1', 'not a stream');
is($t->decode($r->{content})->{choices}[0]{message}{content},
   calls()->[1]{answer}, 'a whole answer too');

# --- 429 with Retry-After: that key rests for the longer time

reset_mock();
chat('/upstream/v1', 'probe');
my $next = keys_used()->[0];            # the key the counter gave last
my %order = (alpha => 'llm#2', 'llm#2' => 'gamma', gamma => 'alpha');
my $victim = $order{$next};             # the key the next request gets
my ($victim_key) = grep { $label{$_} eq $victim } keys %label;

reset_mock();
behave({ keys => { $victim_key => { status => 429, retry_after => 4 } } });
$r = chat('/upstream/v1', 'refused');
is($r->{status}, 429, "the upstream's 429 reaches the client");
like($r->{content}, qr/mock failure 429/, "with the upstream's own body");
is($r->{headers}{'retry-after'}, '4', "and its Retry-After");

for my $i (1 .. 6) {
    chat('/upstream/v1', "after $i");
}
$used = keys_used();
is($used->[0], $victim, "the refused call used $victim");
ok(!(grep { $_ eq $victim } @$used[1 .. $#$used]),
   "$victim rests: the next six calls use the others") or diag("@$used");
is(scalar(grep { $_->{status} == 200 } @{ calls() }), 6, 'and they succeed');

like($t->log('error'),
     qr/the upstream answered 429 to the key "\Q$victim\E" of the pool "llm"; it rests for 4000 ms/,
     'the error log names the key by its label, with the rest');

# the pool's cooldown (2 s) is shorter than Retry-After (4 s): still resting
# at 3 s, back by 5 s
sleep 2.2;
reset_mock();
chat('/upstream/v1', "x$_") for 1 .. 3;
ok(!(grep { $_ eq $victim } @{ keys_used() }), 'still resting after the cooldown')
    or diag("@{ keys_used() }");
sleep 2.2;
reset_mock();
behave({});
chat('/upstream/v1', "y$_") for 1 .. 3;
ok((grep { $_ eq $victim } @{ keys_used() }), 'back after Retry-After')
    or diag("@{ keys_used() }");

# --- 401 and 403 rest for the cooldown

reset_mock();
behave({ keys => { $key{alpha} => { status => 401 },
                   $key{two} => { status => 403 } } });
chat('/upstream/v1', "z$_") for 1 .. 3;
my $first = keys_used();
is_deeply([ sort @$first ], [ sort 'alpha', 'gamma', 'llm#2' ],
          'round robin gave each key one of the three calls')
    or diag("@$first");
chat('/upstream/v1', "w$_") for 1 .. 3;
$used = keys_used();
is_deeply([ @$used[3 .. 5] ], [ 'gamma', 'gamma', 'gamma' ],
          '401 and 403 keys rest: only gamma is used')
    or diag("@$used");

# --- every key rests: 429 from nginx with the time the first is back

behave({ keys => { $key{gamma} => { status => 429, retry_after => 3 } } });
chat('/upstream/v1', 'gamma refused');
reset_mock();
$r = chat('/upstream/v1', 'nothing left');
is($r->{status}, 429, 'every key rests: 429');
my $err = $t->decode($r->{content});
is($err->{error}{code}, 'upstream_keys_resting', 'an OpenAI error naming why');
ok($r->{headers}{'retry-after'} >= 1 && $r->{headers}{'retry-after'} <= 3,
   "Retry-After is when the first key is back ($r->{headers}{'retry-after'} s)");
ok($r->{headers}{'x-request-id'}, 'with X-Request-Id');
is(scalar @{ calls() }, 0, 'the upstream was not called');

sleep 3.2;

# --- a refused call is retried once with the next key (error_page)

reset_mock();
behave({});
chat('/retry/v1', 'probe');
$next = keys_used()->[0];
$victim = $order{$next};
($victim_key) = grep { $label{$_} eq $victim } keys %label;
reset_mock();
behave({ keys => { $victim_key => { status => 429 } } });
$r = chat('/retry/v1', 'retried');
is($r->{status}, 200, 'a 429 is retried with the next key: 200')
    or diag($r->{content});
$used = keys_used();
is(scalar @$used, 2, 'two upstream calls');
is($used->[0], $victim, "the first with $victim");
isnt($used->[1], $victim, "the retry with another key ($used->[1])");
is($t->decode($r->{content})->{choices}[0]{message}{content},
   calls()->[1]{answer}, "the client gets the retry's answer");

$r = chat('/retry/v1', 'streamed retry', stream => 1);
is($r->{status}, 200, 'the next call skips the resting key');
isnt(keys_used()->[2], $victim, 'it did');

# --- the location's client keys guard the upstream keys

reset_mock();
$r = chat('/guarded/v1', 'no key');
is($r->{status}, 401, 'no client key: 401');
is($t->decode($r->{content})->{error}{code}, 'invalid_api_key', 'as JSON');
$r = chat('/guarded/v1', 'wrong key', headers => { Authorization => 'Bearer sk-wrong-key-000' });
is($r->{status}, 401, 'a wrong client key: 401');
is(scalar @{ calls() }, 0, 'the upstream was not called');
$r = chat('/guarded/v1', 'right key', headers => { Authorization => "Bearer $client" });
is($r->{status}, 200, 'the right client key: 200');
my $call = calls()->[0];
ok($call->{key} && $label{ $call->{key} }, 'the upstream got a pool key, not the client key');

# --- nginx's own errors there are OpenAI JSON; the upstream's pass

$r = chat('/down/v1', 'nobody home');
is($r->{status}, 502, 'the upstream is down: 502');
like($r->{headers}{'content-type'}, qr{^application/json}, 'as JSON');
is($t->decode($r->{content})->{error}{code}, 'bad_gateway', 'an OpenAI error');

# --- no key material in any log

$t->stop_nginx;
my $logs = join '', map { $t->log($_) } qw(error access keys mock-llm);
for my $k (sort keys %label) {
    unlike($logs, qr/\Q$k\E/, "$label{$k}'s key is in no log");
}
like($t->log('keys'), qr/key=alpha client=-/, 'the access log has the label');
like($t->log('keys'), qr/key=\S+ client=app/, 'and the client key name');

# --- a reload keeps the cooldowns; a new key file is read

$t->start_nginx(%conf);
reset_mock();
behave({ keys => { $key{alpha} => { status => 429, retry_after => 30 } } });
chat('/upstream/v1', "r$_") for 1 .. 3;
is(scalar(grep { $_ eq 'alpha' } @{ keys_used() }), 1, 'alpha refused once');
put("$dir/llm.keys", "alpha $key{alpha}\ndelta sk-delta-" . 'd' x 24 . "\n");
$label{ 'sk-delta-' . 'd' x 24 } = 'delta';
$t->reload_nginx;
reset_mock();
behave({});
chat('/upstream/v1', "s$_") for 1 .. 4;
is_deeply([ sort @{ keys_used() } ], [ ('delta') x 4 ],
          'after a reload: the new file, and alpha still rests')
    or diag("@{ keys_used() }");

# --- the drop-in nginx-conf/upstream-keys.conf, as shipped but for the
#     addresses (no DNS here: the API is the mock)

my $t2 = ChatBridgeTest->new;
my $port2 = ChatBridgeTest::free_port();
my $dropin = do { local (@ARGV, $/) = ("$ChatBridgeTest::TOP/nginx-conf/upstream-keys.conf"); <> };
my $n = 0;
$n += $dropin =~ s{https://api\.openai\.com}{http://127.0.0.1:$mock}g;
$n += $dropin =~ s{/etc/chatbridge/llm\.keys}{$dir/llm.keys}g;
$n += $dropin =~ s{listen 127\.0\.0\.1:5104;}{listen 127.0.0.1:$port2;}g;
$n += $dropin =~ s{/var/log/nginx/}{${\ $t2->dir }/}g;
ok($n >= 5, 'the drop-in has the addresses its comments name');
unlike(join('', grep { !/^\s*#/ } split /^/, $dropin),
       qr{openai\.com|/etc/chatbridge|/var/log|:5104;}, 'all of them replaced');
put($t2->dir . '/upstream-keys.conf', $dropin);
$t2->start_nginx(http => "include ${\ $t2->dir }/upstream-keys.conf;");
reset_mock();
behave({ keys => { $key{alpha} => { status => 429 } } });
my $ok = 0;
for my $i (1 .. 4) {
    $r = HTTP::Tiny->new(timeout => 10)->post(
        "http://127.0.0.1:$port2/v1/chat/completions",
        { headers => { 'Content-Type' => 'application/json',
                       'X-Api-Key' => 'sk-client-secret-000' },
          content => $t->encode({ model => 'm', messages => [
                                  { role => 'user', content => "d$i" }] }) });
    $ok++ if $r->{status} == 200;
}
is($ok, 4, 'through the drop-in, every call answered (429s retried)');
$used = keys_used();
is(scalar(grep { $_ eq 'alpha' } @$used), 1, 'alpha refused once, then rested');
is(scalar(grep { $_ eq 'delta' } @$used), 4, 'the others answered');
ok(!(grep { ($_->{key} // '') =~ /client-secret/ } @{ calls() }),
   "a client's X-Api-Key is not passed on");
like($t2->log('chatbridge-upstream'), qr/key=delta upstream=429 : 200$/m,
     'its access log shows the refused key and the retry') or diag($t2->log('chatbridge-upstream'));
$t2->done;

# --- bad configurations are refused with the reason

my @bad = (
    [ "chatbridge_key_pool llm $dir/nope.keys;", '', qr/nope\.keys.*failed/ ],
    [ "chatbridge_key_pool llm $dir/empty.keys;", '', qr/holds no key/ ],
    [ "chatbridge_key_pool llm $dir/dup.keys;", '', qr/are the same/ ],
    [ "chatbridge_key_pool llm $dir/three.keys;", '', qr/a line is "KEY" or "LABEL KEY"/ ],
    [ "chatbridge_key_pool llm $dir/llm.keys cooldown=soon;", '', qr/invalid cooldown/ ],
    [ "chatbridge_key_pool llm $dir/llm.keys; chatbridge_key_pool llm $dir/llm.keys;",
      '', qr/already defined/ ],
    [ '', 'location /x/ { chatbridge_upstream_key_pool nosuch; }',
      qr/no "chatbridge_key_pool nosuch"/ ],
    [ "chatbridge_key_pool llm $dir/llm.keys;",
      'location /y/ { chatbridge; chatbridge_upstream_key_pool llm; }',
      qr/not for a "chatbridge" location/ ],
);
put("$dir/empty.keys", "# nothing\n\n");
put("$dir/dup.keys", "a sk-same-key-000\nb sk-same-key-000\n");
put("$dir/three.keys", "a b c\n");

for my $b (@bad) {
    my ($rc, $out) = $t->nginx_test(http => $b->[0], server => $b->[1]);
    isnt($rc, 0, "refused: $b->[2]");
    like($out, $b->[2], 'with the reason') or diag($out);
}

my ($rc, $out) = $t->nginx_test(http => "chatbridge_key_pool llm $dir/llm.keys;",
                                 server => 'location /z/ { chatbridge_upstream_key_pool llm; }');
is($rc, 0, 'a good one passes') or diag($out);

$t->done;
done_testing;
