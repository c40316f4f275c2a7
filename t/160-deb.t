# Debian packages: make deb builds libnginx-mod-http-chatbridge and
# chatbridge-sidecar, whose metadata and contents are checked here.  Then, as
# root on Debian and with CB_SYSTEM_TESTS=1 (.ci/run sets it), both are
# installed with apt-get and serve a request with the system nginx: the
# module is enabled in /etc/nginx/modules-enabled and passes nginx -t of
# /etc/nginx; the sidecar runs as its systemd unit says
# (user chatbridge, /etc/chatbridge/sidecar.conf); /usr/sbin/nginx, with the
# packaged snippets and modules-enabled, passes a scripted browser that
# presents the packaged token and a chat completion.  Last, what the test
# started is stopped by pid and both packages are purged, leaving the system
# as it was (an interrupted run is cleaned up by the next one).

use strict;
use warnings;
use lib 't/lib';
use ChatBridgeTest;
use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Test::More;

my $TOP = $ChatBridgeTest::TOP;
my @PKGS = qw(libnginx-mod-http-chatbridge chatbridge-sidecar);
my $MODS = '/etc/nginx/modules-enabled';
my $LINK = "$MODS/50-mod-http-chatbridge.conf";
my $AVAILABLE = '/usr/share/nginx/modules-available/mod-http-chatbridge.conf';
my $SO = '/usr/lib/nginx/modules/ngx_http_chatbridge_module.so';
my $UNIT = '/lib/systemd/system/chatbridge-sidecar.service';
my $TOKEN = '/etc/chatbridge/browser-token';
my $STATE = '/var/tmp/chatbridge-t160.state';   # what an install run changed
my $APT = 'DEBIAN_FRONTEND=noninteractive apt-get -y -q '
          . '-o DPkg::Lock::Timeout=60';

plan skip_all => 'dpkg-deb is missing: Debian packages are built on Debian'
    unless have('dpkg-deb');

# a command's exit code and output (stdout and stderr)
sub run {
    my (@cmd) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

sub have { grep { -x "$_/$_[0]" } split /:/, $ENV{PATH} }

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return undef;
    local $/;
    return <$fh>;
}

sub status_of {
    my ($pkg) = @_;
    my ($rc, $out) = run('dpkg-query', '-W', '-f=${Status}', $pkg);
    return $rc == 0 ? $out : '';
}

sub present { my $s = status_of($_[0]); $s ne '' && $s !~ /not-installed/ }

# --- the packages

my $build = $ENV{BUILD} ? abs_path($ENV{BUILD} =~ m{^/} ? $ENV{BUILD}
                                                         : "$TOP/$ENV{BUILD}")
                        : "$TOP/build";
# a maintainer name with what sed's replacement text would read as its own
# (&, the | delimiter) reaches the control files as it is
my $maintainer = 'chatbridge Q&A | R&D team';
my ($rc, $out) = do {
    local $ENV{DEBFULLNAME} = $maintainer;
    local $ENV{DEBEMAIL} = 'qa@example.org';
    run('make', '-C', $TOP, '--no-print-directory', 'deb', "BUILD=$build");
};
is($rc, 0, 'make deb') or diag($out);

chomp(my $upstream = slurp("$TOP/VERSION") // '');
my $version = "$upstream-1";
chomp(my $arch = qx{dpkg --print-architecture});
my %deb = map { $_ => "$build/deb/${_}_${version}_$arch.deb" } @PKGS;
for (@PKGS) {
    ok(-f $deb{$_}, "$_ ${version} ($arch) is built")
        or BAIL_OUT("no $deb{$_}");
}

my $dir = tempdir('cbdeb-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# build-deb.sh takes no sanitizer build, and no file objdump cannot read
{
    my $fake = "$dir/fake-build";
    mkdir $_ for $fake, "$fake/nginx", "$fake/sillytavern";
    for (['chatbridge.user.js', "// x\n"], ['sillytavern/index.js', "// x\n"]) {
        open my $fh, '>', "$fake/$_->[0]" or die;
        print $fh $_->[1];
        close $fh;
    }
    open my $c, '>', "$fake/x.c" or die;
    print $c "int main(void) { return 0; }\n";
    close $c;
    ($rc, $out) = run('cc', '-fsanitize=address', '-o',
                      "$fake/chatbridge-sidecar", "$fake/x.c");
    ($rc, $out) = run('cc', '-fsanitize=address', '-shared', '-fPIC', '-o',
                      "$fake/nginx/ngx_http_chatbridge_module.so", "$fake/x.c")
        if $rc == 0;
    SKIP: {
        skip "no sanitizer build here: $out", 2 if $rc != 0;
        ($rc, $out) = run("$TOP/packaging/build-deb.sh", $fake, "$dir/fake-out");
        isnt($rc, 0, 'build-deb.sh refuses a sanitizer build');
        like($out, qr/is a sanitizer build/, 'saying so') or diag($out);
    }
    open my $so, '>', "$fake/nginx/ngx_http_chatbridge_module.so" or die;
    print $so "not an ELF file\n";
    close $so;
    ($rc, $out) = run("$TOP/packaging/build-deb.sh", $fake, "$dir/fake-out");
    isnt($rc, 0, 'build-deb.sh stops at a module objdump cannot read');
    like($out, qr/objdump cannot read/, 'saying so') or diag($out);
}

my (%control, %files);
for my $p (@PKGS) {
    ($rc, $out) = run('dpkg-deb', '-f', $deb{$p});
    my %f = $out =~ /^([\w-]+): (.*)$/mg;
    $control{$p} = \%f;
    is($f{Package}, $p, "$p: Package");
    is($f{Version}, $version, "$p: Version from VERSION");
    is($f{Architecture}, $arch, "$p: Architecture");
    is($f{Maintainer}, "$maintainer <qa\@example.org>",
       "$p: Maintainer, as DEBFULLNAME and DEBEMAIL said");

    ($rc, $out) = run('dpkg-deb', '-c', $deb{$p});
    for (split /\n/, $out) {
        my ($mode, $owner, $path) = m{^(\S+) (\S+)\s+\d+ \S+ \S+ \.(/\S*)$}
            or next;
        $files{$p}{$path} = [$mode, $owner];
    }
    is_deeply([ grep { $files{$p}{$_}[1] ne 'root/root' }
                sort keys %{ $files{$p} } ], [], "$p: every file root's");

    run('dpkg-deb', '-x', $deb{$p}, "$dir/$p");
    run('dpkg-deb', '-e', $deb{$p}, "$dir/$p/DEBIAN");
    for my $s (qw(postinst prerm postrm)) {
        ok(-x "$dir/$p/DEBIAN/$s", "$p: a $s");
    }
}

# the module, as Debian's libnginx-mod-* are
my $m = 'libnginx-mod-http-chatbridge';
my ($abi) = (slurp('/usr/share/nginx/src/debian/libnginx-mod.abisubstvars')
             // '') =~ /^nginx:abi=(\S+)/m;
ok($abi, "nginx-dev names the ABI ($abi)");
like($control{$m}{Depends}, qr/(^|, )\Q$abi\E(,|$)/,
     'the module depends on the ABI of the nginx it was built for');
like($control{$m}{Depends}, qr/\blibjansson4\b/, 'and on libjansson4');
like($control{$m}{Recommends}, qr/(^|, )ca-certificates(,|$)/,
     'it recommends ca-certificates (upstream-keys.conf verifies the API '
     . 'against /etc/ssl/certs/ca-certificates.crt)')
    or diag($control{$m}{Recommends});
is($control{$m}{Section}, 'httpd', 'Section httpd');
is($files{$m}{$SO}[0], '-rw-r--r--', "the module in $SO");
is(slurp("$dir/$m$AVAILABLE"), "load_module $SO;\n",
   "$AVAILABLE loads it");
ok($files{$m}{'/usr/share/chatbridge/chatbridge.user.js'},
   'the userscript in /usr/share/chatbridge/');
ok($files{$m}{"/usr/share/chatbridge/sillytavern/$_"},
   "the SillyTavern extension's $_ in /usr/share/chatbridge/sillytavern/")
    for qw(manifest.json index.js cb-protocol.js settings.html style.css);
opendir my $dh, "$TOP/nginx-conf" or die;
my @examples = sort grep { /\.conf$/ } readdir $dh;
closedir $dh;
is_deeply([ grep { !$files{$m}{"/usr/share/chatbridge/nginx/$_"} } @examples ],
          [], 'every nginx-conf/ example in /usr/share/chatbridge/nginx/');
my %snippets = map { $_ => 1 }
               map { m{^\s*include /etc/chatbridge/nginx/([^;]+);}mg }
               map { slurp("$TOP/nginx-conf/$_") // '' } @examples;
my @conffiles = split /\n/, slurp("$dir/$m/DEBIAN/conffiles") // '';
ok(%snippets && $snippets{'chatbridge.conf'}, 'the examples include '
   . 'snippets from /etc/chatbridge/nginx/ (chatbridge.conf ...)');
is_deeply([ sort @conffiles ],
          [ map { "/etc/chatbridge/nginx/$_" } sort keys %snippets ],
          'the package has them there, as conffiles');
ok(!grep({ m{^/etc/nginx/} } keys %{ $files{$m} }),
   'nothing in /etc/nginx: the postinst makes the symlink');

# the sidecar: binary, unit, conffile, man page
my $s = 'chatbridge-sidecar';
like($control{$s}{Depends}, qr/\blibwebsockets\d+\b/, 'the sidecar depends '
     . 'on libwebsockets') or diag($control{$s}{Depends});
like($control{$s}{Depends}, qr/\blibjansson4\b/, 'libjansson4');
like($control{$s}{Depends}, qr/\badduser\b/, 'adduser (the postinst uses it)');
is($files{$s}{'/usr/sbin/chatbridge-sidecar'}[0], '-rwxr-xr-x',
   '/usr/sbin/chatbridge-sidecar');
($rc, $out) = run("$dir/$s/usr/sbin/chatbridge-sidecar", '--help');
is($rc, 0, 'it runs (--help)');
($rc, $out) = run('objdump', '-p', "$dir/$s/usr/sbin/chatbridge-sidecar",
                  "$dir/$m$SO");
unlike($out, qr/NEEDED\s+lib[a-z]*san/, 'a release build, no sanitizer');
for my $f ("$s/usr/sbin/chatbridge-sidecar", "$m$SO") {
    ($rc, $out) = run('readelf', '-d', "$dir/$f");
    like($out, qr/\(FLAGS\)\s+BIND_NOW/, "hardened: ${\ ($f =~ s{.*/}{}r) } "
         . 'binds now');
}
ok($files{$s}{'/usr/share/man/man8/chatbridge-sidecar.8.gz'}, 'a man page');
for my $p (@PKGS) {
    ok($files{$p}{"/usr/share/doc/$p/$_"}, "$p: $_")
        for qw(copyright changelog.Debian.gz);
}
is(slurp("$dir/$s/DEBIAN/conffiles"), "/etc/chatbridge/sidecar.conf\n",
   '/etc/chatbridge/sidecar.conf is a conffile');

# the postinst's browser token, made in a tree of its own
# (CHATBRIDGE_POSTINST_TEST_ROOT, for this test alone) with the system
# commands it calls stubbed: 0600 for the user chatbridge, not readable by
# the group chatbridge that nginx's workers are in (nginx's master reads it
# as root); a token of an earlier version (root:chatbridge 0640) is kept and
# tightened; a mode the administrator chose is left.  A chrootless
# installation (DPKG_ROOT), which would add users and start services here,
# is refused before anything is done.
my $postinst = "$dir/$s/DEBIAN/postinst";
my $stubs = "$dir/stubs";
mkdir $stubs;
{
    my %stub = (
        getent => 'exit 0', adduser => 'exit 0', addgroup => 'exit 0',
        'dpkg-trigger' => 'exit 0', 'deb-systemd-helper' => 'exit 0',
        'deb-systemd-invoke' => 'exit 0', systemctl => 'exit 0',
        id => 'echo www-data chatbridge',
        chown => qq(echo "\$*" >> "$stubs/chown.log"),
        install => qq(echo "\$*" >> "$stubs/install.log"; )
                   . 'for a; do last=$a; done; mkdir -p "$last"',
        stat => qq(if [ "\$2" = '%U:%G %a' ] && [ -e "$stubs/old" ]; then )
                . q(echo 'root:chatbridge 640'; else exec /usr/bin/stat "$@"; fi),
    );
    for my $cmd (keys %stub) {
        open my $fh, '>', "$stubs/$cmd" or die;
        print $fh "#!/bin/sh\necho \"$cmd \$*\" >> \"$stubs/calls.log\"\n"
                  . "$stub{$cmd}\n";
        close $fh;
        chmod 0755, "$stubs/$cmd";
    }
}
# a maintainer script run with the stubs first in PATH, and %env
my $script_run = sub {
    my ($script, $env, @args) = @_;
    unlink "$stubs/chown.log", "$stubs/calls.log";
    local $ENV{PATH} = "$stubs:/usr/sbin:/usr/bin:/sbin:/bin";
    delete local $ENV{DPKG_ROOT};
    delete local $ENV{CHATBRIDGE_POSTINST_TEST_ROOT};
    local @ENV{keys %$env} = values %$env;
    return run('sh', $script, @args);
};

{
    my $chrootless = "$dir/chrootless";
    mkdir $chrootless;
    ($rc, $out) = $script_run->($postinst, { DPKG_ROOT => $chrootless },
                                'configure', '');
    isnt($rc, 0, 'postinst with DPKG_ROOT (a chrootless installation): '
         . 'it stops');
    my $says = qr/chrootless installation \(DPKG_ROOT=\Q$chrootless\E\)/;
    like($out, qr/$says is not supported/, 'saying it is not supported')
        or diag($out);
    is(slurp("$stubs/calls.log"), undef, 'before it adds a user or a group, '
       . 'or touches systemd') or diag(slurp("$stubs/calls.log"));
    opendir my $dh, $chrootless or die;
    is_deeply([ grep { !/^\.\.?$/ } readdir $dh ], [],
              'or writes anything');
}

SKIP: {
    like(slurp($postinst) // '',
         qr/\$\{CHATBRIDGE_POSTINST_TEST_ROOT:-\}/,
         'the postinst writes under $CHATBRIDGE_POSTINST_TEST_ROOT')
        or skip 'running it would write to this system', 12;

    my $root = "$dir/test-root";
    mkdir $_ for $root, "$root/etc", "$root/etc/chatbridge", "$root/var",
                 "$root/var/lib";
    my $tok = "$root/etc/chatbridge/browser-token";
    my $postinst_run = sub {
        return $script_run->($postinst,
                             { CHATBRIDGE_POSTINST_TEST_ROOT => $root },
                             'configure', @_);
    };
    my $mode = sub { sprintf '%04o', (stat $tok)[2] & 07777 };

    ($rc, $out) = $postinst_run->('');
    is($rc, 0, 'postinst configure (first installation)') or diag($out);
    like(slurp($tok) // '', qr/^[0-9a-f]{48}\n\z/, 'a token of 24 random bytes');
    is($mode->(), '0600', 'the token: 0600');
    is(slurp("$stubs/chown.log"), "chatbridge:chatbridge $tok.new\n",
       'chatbridge:chatbridge');
    ok(-d "$root/var/lib/chatbridge", 'and the state directory');

    open my $fh, '>', $tok or die;
    print $fh "earlier-token\n";
    close $fh;
    chmod 0640, $tok;
    open $fh, '>', "$stubs/old" or die;
    close $fh;
    ($rc, $out) = $postinst_run->('0.1.0-1');
    is($rc, 0, 'postinst configure (an upgrade)') or diag($out);
    unlink "$stubs/old";
    is(slurp($tok), "earlier-token\n", 'keeps the token');
    is($mode->(), '0600', 'an earlier root:chatbridge 0640 one becomes 0600');
    is(slurp("$stubs/chown.log"), "chatbridge:chatbridge $tok\n",
       'chatbridge:chatbridge');

    chmod 0604, $tok;
    ($rc, $out) = $postinst_run->('0.1.0-1');
    is($rc, 0, 'postinst configure (an upgrade again)') or diag($out);
    is($mode->(), '0604', "the administrator's own mode stays");
    is(slurp("$stubs/chown.log"), undef, 'and its owner');
}

# the other scripts, for a chrootless installation or removal (DPKG_ROOT):
# the module's link, and what a purge of the sidecar takes away, are the
# tree's; systemd is left alone
SKIP: {
    my @scripts = map { "$dir/$_->[0]/DEBIAN/$_->[1]" }
                  [$m, 'postinst'], [$m, 'prerm'], [$m, 'postrm'],
                  [$s, 'postrm'];
    my @blind = grep { (slurp($_) // '') !~ /\$\{DPKG_ROOT:-\}/ } @scripts;
    is_deeply(\@blind, [], 'the module\'s scripts and the sidecar\'s postrm '
              . 'act in $DPKG_ROOT') or skip 'running them would change this '
              . 'system', 6;

    my $tree = "$dir/dpkg-root";
    system('mkdir', '-p', "$tree/etc/nginx/modules-enabled",
           "$tree/etc/chatbridge", "$tree/var/lib/chatbridge");
    my $tlink = "$tree/etc/nginx/modules-enabled/50-mod-http-chatbridge.conf";
    my %root = (DPKG_ROOT => $tree);
    ($rc, $out) = $script_run->("$dir/$m/DEBIAN/postinst", \%root,
                                'configure', '');
    is(readlink($tlink), $AVAILABLE, "the module's postinst: the link in "
       . 'DPKG_ROOT, to the module as nginx there finds it') or diag($out);
    ($rc, $out) = $script_run->("$dir/$m/DEBIAN/prerm", \%root, 'remove');
    ok(!-l $tlink && -l "$tlink.removed", 'its prerm sets it aside there')
        or diag($out);
    ($rc, $out) = $script_run->("$dir/$m/DEBIAN/postrm", \%root, 'purge');
    ok(!-l $tlink && !-l "$tlink.removed", 'its postrm takes it away there')
        or diag($out);

    open my $fh, '>', "$tree/etc/chatbridge/browser-token" or die;
    close $fh;
    ($rc, $out) = $script_run->("$dir/$s/DEBIAN/postrm", \%root, 'purge');
    is($rc, 0, "the sidecar's postrm purge") or diag($out);
    ok(!-e "$tree/etc/chatbridge" && !-e "$tree/var/lib/chatbridge",
       'takes the token and the state directory away there');
    is(slurp("$stubs/calls.log"), undef, 'and leaves systemd alone')
        or diag(slurp("$stubs/calls.log"));
}

my $unit = slurp("$dir/$s$UNIT") // '';
my %u = $unit =~ /^(\w+)=(.*)$/mg;
is($u{Type}, 'simple', 'the unit: Type=simple');
is($u{User}, 'chatbridge', 'User=chatbridge');
is($u{ExecStart},
   '/usr/sbin/chatbridge-sidecar --config /etc/chatbridge/sidecar.conf',
   'ExecStart reads /etc/chatbridge/sidecar.conf');
is($u{RuntimeDirectory}, 'chatbridge', 'RuntimeDirectory=chatbridge');
is($u{RuntimeDirectoryMode}, '0750', 'which only group chatbridge may enter');
is($u{$_}, 'yes', "$_=yes") for qw(NoNewPrivileges ProtectHome PrivateTmp);
is($u{ProtectSystem}, 'strict', 'ProtectSystem=strict');
is($u{ReadWritePaths}, '/var/lib/chatbridge', 'its state directory writable');

my $conf = eval { decode_json(slurp("$dir/$s/etc/chatbridge/sidecar.conf")) }
           // {};
my ($default) = (slurp("$TOP/ngx_chatbridge_module/"
                       . 'ngx_http_chatbridge_module.c') // '')
                =~ /ngx_str_set\(&mcf->sidecar, "([^"]+)"\)/;
is($conf->{control}, $default,
   "sidecar.conf: the control socket is the module's default ($default)");
is($conf->{token_file}, $TOKEN, "the token in $TOKEN");
is($conf->{control_group}, 'chatbridge', 'the socket for group chatbridge');
my ($ws) = (slurp("$dir/$m/etc/chatbridge/nginx/chatbridge-ws.conf") // '')
           =~ m{^proxy_pass http://([^;/]+);}m;
is($conf->{listen}, $ws, "it listens where chatbridge-ws.conf passes "
   . "browsers ($ws)");
my $man = qx{gzip -dc $dir/$s/usr/share/man/man8/chatbridge-sidecar.8.gz};
like($man, qr/^\.I \Q$conf->{listen}\E\n.*browsers/m,
     "the man page names the browsers' address ($conf->{listen})");
unlike($man . $unit, qr/browsers' socket|socket nginx passes browsers/,
       'the man page and the unit put no browser socket in /run/chatbridge');

if (have('lintian')) {
    ($rc, $out) = run('lintian', '--fail-on', 'error,warning',
                      values %deb);
    is($rc, 0, 'lintian: no error, no warning') or diag($out);
}

# --- installed, serving: as root on Debian only

my %was;        # what the system looked like before the install run
my $t;
my $owner = $$;

# an interrupted test still leaves the system as it was (END)
$SIG{INT} = $SIG{TERM} = sub { die "interrupted\n" };

SKIP: {
    skip 'installing the packages on this machine is for CI: set '
         . 'CB_SYSTEM_TESTS=1 to allow it (.ci/run does)', 1
        unless $ENV{CB_SYSTEM_TESTS};
    skip 'installing the packages needs root', 1 if $> != 0;
    skip 'installing the packages needs Debian', 1
        unless -f '/etc/debian_version' && have('apt-get');
    skip "the system's nginx is not installed", 1
        unless status_of('nginx') =~ /install ok installed/;

    if (-f $STATE) {
        diag('a previous run was interrupted: cleaning up after it');
        %was = map { /^(\w+)=(.*)$/ } split /\n/, slurp($STATE);
        restore();
    }
    skip 'chatbridge packages are installed here, not by this test: '
         . 'leaving them alone', 1 if grep { present($_) } @PKGS;

    install_and_serve();
    restore();
    check_restored();
}

done_testing;

END {
    # a test that dies midway still leaves the system as it was
    restore() if %was && !$was{restored} && $$ == $owner;
}

sub install_and_serve {
    my @ww = getgrnam('chatbridge');
    %was = (
        user => getpwnam('chatbridge') ? 1 : 0,
        group => @ww ? 1 : 0,
        member => (@ww && grep { $_ eq 'www-data' } split / /, $ww[3]) ? 1
                                                                        : 0,
        run => -e '/run/chatbridge' ? 1 : 0,
        mods => join(',', mods()),
    );
    open my $fh, '>', $STATE or die "$STATE: $!";
    print $fh map { "$_=$was{$_}\n" } sort keys %was;
    close $fh;

    ($rc, $out) = run('sh', '-c', "$APT install --no-install-recommends "
                                  . join(' ', map { $deb{$_} } @PKGS));
    is($rc, 0, 'apt-get install ./libnginx-mod-... ./chatbridge-sidecar...')
        or diag($out);
    is(status_of($_), 'install ok installed', "$_ is installed") for @PKGS;

    is(readlink($LINK), $AVAILABLE, "the module is enabled: $LINK");
    ($rc, $out) = run('/usr/sbin/nginx', '-T');
    is($rc, 0, "nginx -t of the system's configuration passes") or diag($out);
    like($out, qr{^load_module \Q$SO\E;}m, 'with the module loaded');

    my @pw = getpwnam('chatbridge');
    ok(@pw && $pw[2] < 1000, "a system user chatbridge (uid $pw[2])");
    like($pw[8] // '', qr/nologin|false/, 'that cannot log in');
    my @gr = getgrnam('chatbridge');
    ok((grep { $_ eq 'www-data' } split / /, $gr[3] // ''),
       "nginx's workers (www-data) are in the group chatbridge");

    my @st = stat $TOKEN;
    is(sprintf('%04o', $st[2] & 07777), '0600', "$TOKEN: 0600");
    is("$st[4]:$st[5]", "$pw[2]:$gr[2]", 'chatbridge:chatbridge');
    my $token = slurp($TOKEN) // '';
    like($token, qr/^[0-9a-f]{48}\n\z/, 'a fresh token of 24 random bytes');
    chomp $token;
    @st = stat '/var/lib/chatbridge';
    is(sprintf('%04o %d', $st[2] & 07777, $st[4] // -1),
       "0750 $pw[2]", 'the state directory, 0750 chatbridge');

    if (have('systemd-analyze')) {
        ($rc, $out) = run('systemd-analyze', 'verify', $UNIT);
        is($rc, 0, 'systemd-analyze verify: the unit is sound') or diag($out);
    }

    # an upgrade (here, the same version again) keeps the token
    ($rc, $out) = run('dpkg', '-i', $deb{'chatbridge-sidecar'});
    is($rc, 0, 'the sidecar package installs over itself') or diag($out);
    is(slurp($TOKEN), "$token\n", 'and keeps the token');
    is(readlink($LINK), $AVAILABLE, 'the module stays enabled');

    SKIP: {
        skip "a node with t/node_modules is needed for the scripted browser "
             . "((cd t && npm ci))", 1
            unless have('node') && -d "$TOP/t/node_modules/ws";
        # (where systemd runs, the postinst may have started the sidecar)
        skip 'the sidecar\'s browser port ' . $conf->{listen} . ' is taken',
             1 unless -d '/run/systemd/system' || port_free($conf->{listen});
        serve($token, \%u);
    }
}

sub serve {
    my ($token, $unit) = @_;

    $t = ChatBridgeTest->new(token => $token);
    my $tdir = $t->dir;

    if (-d '/run/systemd/system') {
        # systemd runs here: the unit itself (the postinst may have started
        # it already)
        run('systemctl', 'start', 'chatbridge-sidecar.service');
        ok(ChatBridgeTest::wait_for(sub { -S '/run/chatbridge/sidecar.sock'
                                          && !port_free($conf->{listen}) },
                                    10), 'systemd runs the sidecar')
            or diag((run('journalctl', '-n', '20', '-u',
                          'chatbridge-sidecar.service'))[1]);
    } else {
        # as systemd would: the runtime directory, then ExecStart as User
        my (undef, undef, $uid, $gid) = getpwnam($unit->{User});
        mkdir '/run/chatbridge';
        chown $uid, $gid, '/run/chatbridge';
        chmod oct($unit->{RuntimeDirectoryMode}), '/run/chatbridge';
        my $pid = $t->spawn('sidecar', "$tdir/sidecar.log", 'setpriv',
                            '--reuid', $unit->{User},
                            '--regid', $unit->{Group}, '--init-groups',
                            '--no-new-privs', '--', 'sh', '-c',
                            "umask $unit->{UMask} && exec \"\$@\"", 'sh',
                            split(/ /, $unit->{ExecStart}));
        $t->{sidecar} = $pid;
        remember($pid, 'chatbridge-sidecar');
        ok(ChatBridgeTest::wait_for(sub { -S '/run/chatbridge/sidecar.sock'
                                          && !port_free($conf->{listen}) },
                                    5), 'the packaged sidecar starts as '
                                        . 'the unit says')
            or diag($t->log('sidecar'));
        my ($ruid) = (slurp("/proc/$pid/status") // '') =~ /^Uid:\s+(\d+)/m;
        is($ruid, $uid, 'as the user chatbridge');
    }
    my @st = stat '/run/chatbridge/sidecar.sock';
    is(sprintf('%04o %s', $st[2] & 0777, scalar getgrgid($st[5] // 0)),
       '0660 chatbridge', 'its control socket: 0660, group chatbridge');

    # Debian's nginx, with the modules Debian's configuration enables and
    # the packaged snippets, on a port of this test's own
    my $port = $t->port;
    $t->start_nginx(conf => <<"CONF");
${\ $t->main_conf(user => 'www-data', workers => 2) }
include /etc/nginx/modules-enabled/*.conf;

events { worker_connections 256; }

http {
${\ $t->http_paths }
    server {
        listen 127.0.0.1:$port;

        location /v1/ {
            include /etc/chatbridge/nginx/chatbridge.conf;
        }
        location = /chatbridge/ws {
            include /etc/chatbridge/nginx/chatbridge-ws.conf;
        }
        location = /chatbridge/chatbridge.user.js {
            chatbridge_userscript /usr/share/chatbridge/chatbridge.user.js;
            chatbridge_browser_token_file /etc/chatbridge/browser-token;
        }
        location = /chatbridge/status {
            chatbridge_status;
        }
    }
}
CONF
    remember($t->{nginx}, 'nginx');
    ok(ChatBridgeTest::wait_for(sub { ($t->status->{link} // '') eq 'ready' },
                                5),
       "nginx's workers (www-data) linked to the sidecar");

    remember($t->start_browser('--id', 'deb-tab'), 'fake-browser');
    ok($t->wait_browsers(1), 'a browser with the packaged token connects '
                             . 'through nginx');

    my $r = $t->http(POST => '/v1/chat/completions', {
        model => 'any', messages => [{ role => 'user',
                                       content => 'hello from Debian' }] });
    is($r->{status}, 200, 'a chat completion: 200');
    is(($t->decode($r->{content}) // {})->{choices}[0]{message}{content},
       'echo: hello from Debian', 'answered by the browser');

    my $res = $t->raw(POST => '/v1/chat/completions', {
        model => 'any', stream => JSON::PP::true,
        messages => [{ role => 'user', content => 'streamed' }] });
    is($t->sse_text($res), 'echo: streamed', 'and streamed');

    $r = $t->http(GET => '/chatbridge/chatbridge.user.js');
    is($r->{status}, 200, 'the packaged userscript is served');
    like($r->{content}, qr/\Q$token\E/, 'with the packaged token baked in');

    $t->stop;
    $t->error_log_clean;
    unlike($t->log('sidecar'), qr/\b(error|alert|crit)\b/i,
           'the sidecar logged no error');
}

# a process this test started, for a later run to stop if this one is
# interrupted before it can
sub remember {
    my ($pid, $what) = @_;
    $was{"pid_$pid"} = $what;
    open my $fh, '>>', $STATE or die "$STATE: $!";
    print $fh "pid_$pid=$what\n";
    close $fh;
}

sub port_free {
    my ($addr) = @_;
    my ($host, $port) = $addr =~ /^(.*):(\d+)$/ or return 1;
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port);
    return $s ? 0 : 1;
}

sub mods {
    opendir my $d, $MODS or return ();
    my @m = sort grep { !/^\./ } readdir $d;
    closedir $d;
    return @m;
}

# stop what the test started, purge both packages, and put back the user,
# group and group membership as they were
sub restore {
    $t->stop if $t;

    # what an interrupted run left running: its own processes, by pid
    my @left;
    for my $k (grep { /^pid_\d+$/ } keys %was) {
        my ($pid) = $k =~ /(\d+)/;
        my $cmd = slurp("/proc/$pid/cmdline") // next;
        next if index($cmd, $was{$k}) < 0;
        kill 'TERM', $pid;
        push @left, $pid;
    }
    ChatBridgeTest::wait_for(sub { !grep { -e "/proc/$_" } @left }, 10)
        if @left;

    my @there = grep { present($_) } @PKGS;
    if (-d '/run/systemd/system' && present('chatbridge-sidecar')) {
        run('systemctl', 'stop', 'chatbridge-sidecar.service');
    }
    if (@there) {
        my ($rc, $out) = run('sh', '-c', "$APT purge @there");
        diag("apt-get purge: $out") if $rc != 0;
    }
    if (!$was{run} && -d '/run/chatbridge') {
        unlink glob '/run/chatbridge/*';
        rmdir '/run/chatbridge';
    }
    if (!$was{user} && getpwnam('chatbridge')) {
        run('deluser', '--quiet', '--system', 'chatbridge');
    }
    if (!$was{group} && getgrnam('chatbridge')) {
        run('delgroup', '--quiet', '--system', 'chatbridge');
    } elsif ($was{group} && !$was{member}) {
        run('deluser', '--quiet', 'www-data', 'chatbridge');
    }
    unlink $STATE;
    $was{restored} = 1;
}

sub check_restored {
    is(status_of($_), '', "$_ is purged") for @PKGS;
    is(join(',', mods()), $was{mods},
       "$MODS is as it was (no chatbridge link, no .removed)");
    ok(!-e $_, "no $_") for $SO, '/etc/chatbridge', '/var/lib/chatbridge',
        '/usr/share/chatbridge',
        '/etc/systemd/system/multi-user.target.wants/'
        . 'chatbridge-sidecar.service', $was{run} ? () : '/run/chatbridge';
    ok(!getpwnam('chatbridge'), 'the user chatbridge the test made is gone')
        unless $was{user};
    like(status_of('nginx'), qr/install ok installed/, 'nginx stays');
    my ($rc, $out) = run('/usr/sbin/nginx', '-t');
    is($rc, 0, 'and its configuration still passes nginx -t') or diag($out);
}
