# make run: one command starts the sidecar and nginx on the given port,
# prints where to point a client and a browser, serves, and Ctrl-C (SIGINT
# to the foreground process group, as a terminal sends it) stops both.  Its
# runtime folder's name has & and | in it, which the generated nginx.conf
# takes as they are; an API_KEY that would change that configuration is
# refused before anything starts.

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use File::Spec;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use POSIX qw(setpgid :sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);

# util/run.sh with %env: its exit code (undef if it was still running after
# 10 s, and then stopped) and what it printed
sub run_sh {
    my (%env) = @_;
    pipe(my $r, my $w) or die;
    my $pid = fork();
    if ($pid == 0) {
        setpgid(0, 0);
        close $r;
        open STDOUT, '>&', $w;
        open STDERR, '>&', $w;
        $ENV{$_} = $env{$_} for keys %env;
        exec "$ChatBridgeTest::TOP/util/run.sh", ChatBridgeTest::free_port()
            or die;
    }
    close $w;
    my ($out, $rc) = ('', undef);
    my $sel = IO::Select->new($r);
    my $deadline = time + 10;
    while (time < $deadline) {
        if ($sel->can_read(0.2)) {
            my $n = sysread $r, my $buf, 4096;
            $out .= $buf if $n;
        }
        if (waitpid($pid, WNOHANG) == $pid) {
            $rc = $? >> 8;
            last;
        }
    }
    if (!defined $rc) {
        kill 'INT', -$pid;
        ChatBridgeTest::wait_for(sub { waitpid($pid, WNOHANG) == $pid }, 10)
            or do { kill 'KILL', -$pid; waitpid $pid, 0 };
    }
    while (my $n = sysread $r, my $buf, 4096) { $out .= $buf }
    return ($rc, $out);
}

# API_KEY goes into nginx.conf: a key that would end the directive, start
# another or break the file is refused, and nothing starts
for my $key ('sk-aaaaaaaaaaaaaaaa; chatbridge_api_key evil sk-evil-0123456789',
             'sk-with space-000000', 'sk-semi;colon-00000', 'sk-slash/0000000000',
             'sk-amp&ersand-000000', 'sk-pipe|0000000000', 'sk-brace}-0000000000',
             "sk-quote'-0000000000", 'sk-dollar$x-0000000') {
    my $krt = tempdir('cbrun-key-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my ($rc, $out) = run_sh(API_KEY => $key, CHATBRIDGE_RUNTIME => $krt);
    is($rc, 2, "API_KEY \"$key\": refused") or diag($out);
    like($out, qr/^make run: API_KEY may hold only letters, digits and /m,
         'saying which characters it may hold') or diag($out);
    ok(!-e "$krt/nginx.conf" && !-e "$krt/sidecar.pid",
       'before writing a configuration or starting anything');
}

# make run installs what is missing first (util/deps.sh): as root it keeps
# services from starting meanwhile with a policy-rc.d, which goes again when
# it is stopped by TERM or INT in the middle (here with apt-get and
# dpkg-query stubbed, and the policy in a path of the test's own)
SKIP: {
    skip 'util/deps.sh installs only as root', 6 if $> != 0;
    for my $sig (qw(TERM INT)) {
        my $d = tempdir('cbdeps-XXXXXX', TMPDIR => 1, CLEANUP => 1);
        for (['dpkg-query', 'exit 1'],
             ['apt-get', 'case "$*" in *install*) sleep 1 ;; esac; exit 0']) {
            open my $fh, '>', "$d/$_->[0]" or die;
            print $fh "#!/bin/sh\n$_->[1]\n";
            close $fh;
            chmod 0755, "$d/$_->[0]";
        }
        my $policy = "$d/policy-rc.d";
        my $pid = fork();
        if ($pid == 0) {
            setpgid(0, 0);
            open STDOUT, '>', "$d/out" or die;
            open STDERR, '>&', \*STDOUT;
            $ENV{PATH} = "$d:$ENV{PATH}";
            $ENV{CHATBRIDGE_POLICY_RC} = $policy;
            exec "$ChatBridgeTest::TOP/util/deps.sh", 'run' or die;
        }
        ok(ChatBridgeTest::wait_for(sub { -e $policy }, 5),
           "deps.sh: the policy is in place while apt-get runs ($sig)");
        kill $sig, -$pid;       # as a terminal, or a supervisor, does
        my $ended = ChatBridgeTest::wait_for(
            sub { waitpid($pid, WNOHANG) == $pid }, 10);
        ok($ended && $? != 0, "$sig ends it (wait status $?)")
            or do { kill 'KILL', -$pid; waitpid $pid, 0 };
        ok(!-e $policy, 'and removes the policy') or diag(`cat $d/out`);
    }
}

# --- the Makefile, asked what it would do (make -n) with a build folder of
#     the test's own whose files are made to look built

my $TOP = $ChatBridgeTest::TOP;
my $b = tempdir('cbmake-XXXXXX', TMPDIR => 1, CLEANUP => 1);
sub make_n { scalar qx{make -n -C $TOP --no-print-directory BUILD=$b @_ 2>&1} }
sub made {          # FILE...: there, and newer than everything else
    for my $f (@_) {
        system('mkdir', '-p', $f =~ s{/[^/]+$}{}r);
        open my $fh, '>', $f or die "$f: $!";
        close $fh;
    }
}
sub aged { utime(time - 3600, time - 3600, @_) }   # FILE...: an hour old

my $nginx_mk = "$b/nginx/Makefile";
make_n($nginx_mk);                  # its flags, as make first saw them
aged("$b/nginx/configure.flags", "$b/tests/build.flags",
     "$b/sidecar/build.flags");
made($nginx_mk);
unlike(make_n($nginx_mk), qr/configure-module\.sh/,
       'make: a configured module is not configured again');
like(make_n("SANITIZE=address $nginx_mk"),
     qr/configure-module\.sh \S+ \\\n\s+"-fsanitize=address /,
     'but it is with SANITIZE changed');
like(make_n($nginx_mk), qr/configure-module\.sh/, 'and changed back');
aged("$b/nginx/configure.flags");
like(make_n("-W util/configure-module.sh $nginx_mk"), qr/configure-module\.sh/,
     'and when util/configure-module.sh changed');
like(make_n("CC=gcc $nginx_mk"), qr/configure-module\.sh/,
     'and with another compiler');
make_n($nginx_mk);
aged("$b/nginx/configure.flags", "$b/tests/build.flags",
     "$b/sidecar/build.flags");

# each unit test is built again when a header its sources include changes
made("$b/sidecar/protocol_spec.inc", "$b/sidecar/frames.o",
     map { "$b/tests/${_}_test" } qw(cb_openai cb_arena frames));
for (['cb_openai', 'ngx_chatbridge_module/cb_json.h'],
     ['cb_arena', 'ngx_chatbridge_module/cb_json.h'],
     ['cb_arena', 'ngx_chatbridge_module/cb_jsonc.h'],
     ['cb_arena', 'ngx_chatbridge_module/cb_openai.h'],
     ['frames', 'lws-sidecar/frames.h']) {
    my ($test, $h) = @$_;
    unlike(make_n("$b/tests/${test}_test"), qr/-o \Q$b\E\/tests\/${test}_test /,
           "${test}_test is up to date");
    like(make_n("-W $h $b/tests/${test}_test"),
         qr/-o \Q$b\E\/tests\/${test}_test /, "and built again when $h changed");
}
like(make_n("SANITIZE=address $b/tests/cb_openai_test"),
     qr/-fsanitize=address .*-o \Q$b\E\/tests\/cb_openai_test /,
     'and when SANITIZE changed');

# an update of nginx-dev (here a dpkg-query of the test's own that names
# its version) configures the module again, also when conf_flags stays
{
    my $fake = "$b/fake-dpkg";
    mkdir $fake;
    open my $fh, '>', "$fake/dpkg-query" or die;
    print $fh qq(#!/bin/sh\nprintf '%s' "\$CB_FAKE_NGINX_DEV"\n);
    close $fh;
    chmod 0755, "$fake/dpkg-query";
    local $ENV{PATH} = "$fake:$ENV{PATH}";
    local $ENV{CB_FAKE_NGINX_DEV} = '1.22.1-9+deb12u1';
    make_n($nginx_mk);
    aged("$b/nginx/configure.flags");
    made($nginx_mk);
    unlike(make_n($nginx_mk), qr/configure-module\.sh/,
           'make: the same nginx-dev: not configured again');
    $ENV{CB_FAKE_NGINX_DEV} = '1.22.1-9+deb12u2';
    like(make_n($nginx_mk), qr/configure-module\.sh/,
         'another version of nginx-dev: configured again');
}

# the sidecar: every object and the link again when SANITIZE or DEBUG
# changed, as the module and the unit tests are
my @sidecar_objs = ((map { s{^.*/(.*)\.cc$}{$b/sidecar/$1.o}r }
                     grep { !/_test\.cc$/ } glob("$TOP/lws-sidecar/*.cc")),
                    map { "$b/sidecar/$_.o" }
                        qw(cb_shm cb_jsonc cb_arena cb_openai cb_json));
make_n($nginx_mk);
aged("$b/nginx/configure.flags", "$b/tests/build.flags",
     "$b/sidecar/build.flags");
made("$b/sidecar/protocol_spec.inc", @sidecar_objs, "$b/chatbridge-sidecar");
my $sidecar_link = qr/-o \Q$b\E\/chatbridge-sidecar /;
unlike(make_n("$b/chatbridge-sidecar"), qr/-c |$sidecar_link/,
       'make: a built sidecar is up to date');
for (['SANITIZE=address', qr/-fsanitize=address/],
     ['DEBUG=1', qr/-O0 -g3/]) {
    my ($knob, $flag) = @$_;
    my $n = make_n("$knob $b/chatbridge-sidecar") =~ s/\\\n\s*/ /gr;
    my @built = grep { $n =~ /^.*$flag.* -o \Q$_\E$/m } @sidecar_objs;
    is(scalar @built, scalar @sidecar_objs,
       "with $knob: each of its objects built again, $knob") or diag($n);
    like($n, $sidecar_link, 'and linked again') or diag($n);
    make_n("$b/chatbridge-sidecar");
    aged("$b/sidecar/build.flags");
    made(@sidecar_objs, "$b/chatbridge-sidecar");
}

# make clean, then a target (under -j too: clean goes first): the flag
# stamps make wrote as it read the Makefile are gone, and made again (no
# "No rule to make target"), with the same text, so that the next make does
# not count them as changed
{
    my $c = tempdir('cbclean-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my @stamps = map { "$c/$_" } qw(nginx/configure.flags tests/build.flags
                                     sidecar/build.flags);
    my $make = "make -j4 -C $TOP --no-print-directory BUILD=$c";
    my $out = qx{$make clean @stamps 2>&1};
    is($?, 0, 'make clean, then the flag stamps: they are made') or diag($out);
    ok(!grep({ !-f } @stamps), 'all three there again') or diag($out);
    aged(@stamps);
    my @before = map { (stat)[9] } @stamps;
    qx{make -n -C $TOP --no-print-directory BUILD=$c $stamps[0] 2>&1};
    is_deeply([ map { (stat)[9] } @stamps ], \@before,
              'with the text make writes as it reads the Makefile');
}

# a recipe that fails leaves no half-made target that would pass for built
open my $bad, '>', "$b/bad-spec.json" or die;
print $bad '{"x": ")cbspec"}' . "\n";
close $bad;
my $made = qx{make -C $TOP --no-print-directory BUILD=$b SPEC=$b/bad-spec.json $b/sidecar/protocol_spec.inc 2>&1};
isnt($?, 0, 'make: a recipe that fails fails make') or diag($made);
ok(!-e "$b/sidecar/protocol_spec.inc", 'and its target is deleted')
    or diag($made);

# make run: the packages, then the build, then util/run.sh, told where the
# build is (MAKE=true: the dry run does not go into the build itself)
like(make_n('MAKE=true run'),
     qr/\Autil\/deps\.sh run\ntrue --no-print-directory all\nBUILD=\Q$b\E util\/run\.sh \d+\n\z/,
     'make run: util/deps.sh, then the build, then util/run.sh with BUILD');

# make unit runs util/test.sh's unit tier on the unit tests in BUILD, as
# given to make (relative to the top, or absolute), wherever it is started
like(make_n('unit'), qr/^BUILD=\Q$b\E util\/test\.sh unit$/m,
     'make unit: util/test.sh unit, told BUILD');
{
    my $u = "$b/unit-build";
    system('mkdir', '-p', "$u/tests");
    open my $fh, '>', "$u/tests/fake_test" or die;
    print $fh "#!/bin/sh\necho '100%: Checks: 7, Failures: 0, Errors: 0'\n";
    close $fh;
    chmod 0755, "$u/tests/fake_test";
    my $rel = File::Spec->abs2rel($u, $TOP);
    for my $build ($u, $rel) {
        my $out = qx{cd / && BUILD='$build' $TOP/util/test.sh unit 2>&1};
        is($?, 0, "util/test.sh unit with BUILD=$build") or diag($out);
        like($out, qr/^== \Q$u\E\/tests\/fake_test$/m,
             'runs the unit tests in that folder') or diag($out);
        like($out, qr/^7 passed, 0 failed$/m, 'and only those') or diag($out);
    }
    my $out = qx{BUILD='$b/empty' $TOP/util/test.sh unit 2>&1};
    isnt($?, 0, 'util/test.sh unit with no unit tests in BUILD fails');
    like($out, qr/no unit tests in \Q$b\E\/empty\/tests/, 'saying so')
        or diag($out);
}

{
    my ($rc, $out) = run_sh(BUILD => "$b/empty",
                            CHATBRIDGE_RUNTIME => "$b/run");
    is($rc, 1, 'util/run.sh with a BUILD that holds no build stops')
        or diag($out);
    like($out, qr{^make run: \Q$b\E/empty/\S+ is missing: run make}m,
         'naming what is missing') or diag($out);
}

my $rt = tempdir('cbrun&x|y-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $port = ChatBridgeTest::free_port();

# the user copied LMArena Bridge's config.jsonc into run/arena/
mkdir "$rt/arena";
open my $cfg, '>', "$rt/arena/config.jsonc" or die;
print $cfg qq({\n  // mine\n  "session_id": "s-1", "message_id": "m-1",\n)
           . qq(  "api_key": "sk-from-the-arena-file",\n}\n);
close $cfg;
my %key = (Authorization => 'Bearer sk-from-the-arena-file');

pipe(my $r, my $w) or die;
my $pid = fork();
if ($pid == 0) {
    setpgid(0, 0);
    close $r;
    open STDOUT, '>&', $w;
    open STDERR, '>&', $w;
    $ENV{CHATBRIDGE_RUNTIME} = $rt;
    delete $ENV{ARENA};         # the folder in $rt, not the developer's own
    exec "$ChatBridgeTest::TOP/util/run.sh", $port or die;
}
close $w;

# whatever happens below, what make run started does not outlive the test
my $bpid;
END {
    local $?;
    for my $p (grep { $_ } $bpid, $pid) {
        next if waitpid($p, WNOHANG) != 0;
        kill 'INT', $p == $pid ? -$p : $p;
        ChatBridgeTest::wait_for(sub { waitpid($p, WNOHANG) != 0 }, 10)
            or do { kill 'KILL', $p == $pid ? -$p : $p; waitpid $p, 0 };
    }
}

my $out = '';
my $sel = IO::Select->new($r);
my $deadline = time + 20;
while (time < $deadline && $out !~ /Ctrl-C stops/) {
    next unless $sel->can_read(0.2);
    my $n = sysread $r, my $buf, 4096;
    last if defined $n && $n == 0;
    $out .= $buf if $n;
}

like($out, qr{OpenAI base URL\s+http://127\.0\.0\.1:$port/v1}, 'prints the base URL');
like($out, qr{Browser WebSocket\s+ws://127\.0\.0\.1:$port/chatbridge/ws},
     'prints the browser WebSocket URL');
like($out, qr{Status\s+http://127\.0\.0\.1:$port/chatbridge/status},
     'prints the status URL');
like($out, qr{Userscript\s+http://127\.0\.0\.1:$port/chatbridge/chatbridge\.user\.js},
     'prints the userscript URL');
like($out, qr{LMArena files\s+\Q$rt\E/arena \(chatbridge_arena\)},
     'and that it uses the LMArena files it found');
my ($token) = $out =~ /Browser token\s+(\S+)/;
ok($token && length $token >= 16, 'and the browser token');

my $ua = HTTP::Tiny->new(timeout => 5);
is($ua->get("http://127.0.0.1:$port/v1/models")->{status}, 401,
   "config.jsonc's api_key is in force");
is($ua->get("http://127.0.0.1:$port/v1/models", { headers => \%key })->{status},
   200, 'it serves /v1/models');

# the userscript, one click to install, with this bridge baked in
my $us = $ua->get("http://127.0.0.1:$port/chatbridge/chatbridge.user.js");
is($us->{status}, 200, 'the userscript is served');
like($us->{content}, qr{^// ==UserScript==}, 'a userscript');
like($us->{content}, qr{ws://127\.0\.0\.1:$port/chatbridge/ws}, 'with the WebSocket URL');
unlike($us->{content}, qr/__CHATBRIDGE_/, 'and no placeholder left');

# operator commands with the key make run wrote
my $admin = do { local @ARGV = "$rt/admin-key"; <> } // '';
chomp $admin;
ok(length $admin >= 32, 'an admin key in run/admin-key');
is((stat "$rt/admin-key")[2] & 077, 0, 'readable by its owner only');
is((stat "$rt/nginx.conf")[2] & 077, 0, 'as is the generated nginx.conf');
is($ua->post("http://127.0.0.1:$port/chatbridge/admin/capture")->{status},
   401, 'no admin key: 401');
my $cap = $ua->post("http://127.0.0.1:$port/chatbridge/admin/capture", {
    headers => { Authorization => "Bearer $admin",
                 'Content-Type' => 'application/json' },
    content => '{"timeout": 1}' });
is($cap->{status}, 503, 'with it: no tab to capture in yet (503)');
like($cap->{content}, qr/no_capture_browser/, 'says so');

my $st = $ua->get("http://127.0.0.1:$port/chatbridge/status");
like($st->{content}, qr/"link":"ready"/, 'nginx is linked to the sidecar');

# a browser with the printed token gets work
$bpid = fork();
if ($bpid == 0) {
    exec 'node', "$ChatBridgeTest::TOP/t/lib/fake-browser.mjs", '--url',
         "ws://127.0.0.1:$port/chatbridge/ws", '--token', $token;
}
ok(ChatBridgeTest::wait_for(sub {
       $ua->get("http://127.0.0.1:$port/chatbridge/status")->{content}
           =~ /"state":"ready"/ }, 10), 'a browser connects with that token');

my $res = $ua->post("http://127.0.0.1:$port/v1/chat/completions", {
    headers => { 'Content-Type' => 'application/json', %key },
    content => '{"model":"x","messages":[{"role":"user","content":"hi"}]}' });
is($res->{status}, 200, 'a chat completion works');
like($res->{content}, qr/"content":"echo: hi"/, 'with the answer');

kill 'TERM', $bpid;
waitpid $bpid, 0;
$bpid = 0;

# what make run started
my $nginx = do { local @ARGV = "$rt/nginx.pid"; <> } // '';
chomp $nginx;
ok($nginx && kill(0, $nginx), "nginx runs (pid $nginx)");

# Ctrl-C
kill 'INT', -$pid;
my $stopped = ChatBridgeTest::wait_for(sub { waitpid($pid, WNOHANG) == $pid },
                                       10);
ok($stopped, 'Ctrl-C ends make run');
while (my $n = sysread $r, my $buf, 4096) { $out .= $buf }
like($out, qr/chatbridge stopped/, 'and it says so');
ok(!kill(0, $nginx), 'nginx is gone');
my $sidecar = do { local @ARGV = "$rt/sidecar.pid"; <> } // '';
chomp $sidecar;
ok($sidecar && !kill(0, $sidecar), 'the sidecar is gone');
ok(!-e "$rt/sidecar.sock" && !-e "$rt/ws.sock", 'and its sockets removed');

my $log = do { local (@ARGV, $/) = "$rt/logs/error.log"; <> } // '';
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg');

done_testing;
