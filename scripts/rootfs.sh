#!/usr/bin/env bash
# Builds (once) and prints the path of a root filesystem folder for tests, demos and benchmarks.
# No registry: busybox from Debian's busybox-static, Debian ones with debootstrap from the machine's
# own configured mirror. Cached by name and version under $ZP_CACHE/rootfs; rebuilt only when the
# recipe version below changes. Usage: scripts/rootfs.sh busybox|debian|nginx|mariadb|jvm|wordpress|pooled [...]
# `wordpress` prints a folder with two root filesystems: web/ (Apache + PHP + WordPress) and db/
# (MariaDB holding the installed WordPress database); web/ reaches db/ at $ZP_WP_DB_ADDR.
set -euo pipefail
ZP_CACHE=${ZP_CACHE:-/var/cache/zeropod-swift}
ROOT="$ZP_CACHE/rootfs"
here=$(cd "$(dirname "$0")" && pwd)
# WordPress's database address and the address WordPress calls home (the bench harness sets up
# the veth pairs that carry them; see docs/benchmarks.md).
ZP_WP_DB_ADDR=10.78.0.2
ZP_WP_HOME=http://10.77.15.2
log() { printf '[rootfs] %s\n' "$*" >&2; }
die() { printf '[rootfs] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$ROOT"
exec 8>"$ROOT/.lock"; flock 8

source "$(dirname "${BASH_SOURCE[0]}")/lib-apt.sh"

# Builds $1 with function $2 into a temporary folder, then renames it into place (atomic).
cached() {
  local dir="$ROOT/$1" build=$2
  if [ ! -f "$dir/.zp-complete" ]; then
    rm -rf "$dir.tmp" "$dir"
    log "building $1"
    "$build" "$dir.tmp"
    touch "$dir.tmp/.zp-complete"
    mv "$dir.tmp" "$dir"
  fi
  printf '%s\n' "$dir"
}

build_busybox() {
  local d=$1
  [ -x /bin/busybox ] || die "/bin/busybox missing (Debian package busybox-static)"
  mkdir -p "$d"/{bin,sbin,etc,proc,sys,dev,tmp,www,var/log,root}
  cp /bin/busybox "$d/bin/busybox"
  for app in $("$d/bin/busybox" --list); do
    [ -e "$d/bin/$app" ] || ln -s busybox "$d/bin/$app"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nwww-data:x:33:33:www-data:/www:/bin/false\n' >"$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\n' >"$d/etc/group"
  echo "zeropod busybox" >"$d/www/index.html"
  chmod 1777 "$d/tmp"
}

build_debian() {
  local d=$1
  debootstrap --variant=minbase bookworm "$d" "$(debian_uri)" >"$ROOT/debootstrap.log" 2>&1 \
    || { tail -n 20 "$ROOT/debootstrap.log" >&2; die "debootstrap failed (log: $ROOT/debootstrap.log)"; }
  printf '#!/bin/sh\nexit 101\n' >"$d/usr/sbin/policy-rc.d"; chmod +x "$d/usr/sbin/policy-rc.d"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$d/etc/apt/apt.conf.d/99zeropod"
  chroot "$d" apt-get clean
}

# Copies the cached Debian base and installs packages into it.
debian_with() {
  local d=$1; shift
  local base; base=$(cached debian-bookworm-v1 build_debian)
  cp -a "$base" "$d"; rm -f "$d/.zp-complete"
  cp /etc/resolv.conf "$d/etc/resolv.conf" 2>/dev/null || true
  mount -t proc proc "$d/proc"
  trap 'umount "'"$d"'/proc" 2>/dev/null || true; trap - RETURN' RETURN
  DEBIAN_FRONTEND=noninteractive chroot "$d" apt-get install -y -qq "$@" >"$ROOT/install.log" 2>&1 \
    || { tail -n 20 "$ROOT/install.log" >&2; die "apt-get install $* failed in $d (log: $ROOT/install.log)"; }
  chroot "$d" apt-get clean
}

build_nginx() {
  local d=$1
  debian_with "$d" nginx-light
  # Logs to stdio (container stdio is pipes the shim owns), run in the foreground.
  sed -i 's#access_log .*;#access_log /dev/stdout;#; s#error_log .*;#error_log stderr;#' "$d/etc/nginx/nginx.conf"
  grep -q '^daemon off;' "$d/etc/nginx/nginx.conf" || sed -i '1i daemon off;' "$d/etc/nginx/nginx.conf"
  sed -i 's/worker_processes auto;/worker_processes 2;/' "$d/etc/nginx/nginx.conf"
  echo "zeropod nginx" >"$d/var/www/html/index.html"
}

# Runs a temporary mariadbd from rootfs $1 in a private network namespace (loopback only), for
# seeding databases at build time. Sets MARIADB_PID and MARIADB_NS; stop with stop_mariadb.
start_mariadb() {
  local d=$1
  MARIADB_NS="zprootfs-$$"; MARIADB_ROOT=$d
  ip netns add "$MARIADB_NS"
  ip -n "$MARIADB_NS" link set lo up
  mountpoint -q "$d/proc" || mount -t proc proc "$d/proc"
  mkdir -p "$d/run/mysqld"; chroot "$d" chown mysql:mysql /run/mysqld
  ip netns exec "$MARIADB_NS" chroot "$d" /usr/sbin/mariadbd --user=mysql --innodb-use-native-aio=0 \
    --bind-address=127.0.0.1 --port=3306 >"$ROOT/mariadbd-build.log" 2>&1 &
  MARIADB_PID=$!
  local i
  for i in $(seq 1 300); do
    if chroot "$d" mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1; then return 0; fi
    kill -0 "$MARIADB_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$ROOT/mariadbd-build.log" >&2; stop_mariadb "$d"; die "temporary mariadbd in $d did not start"
}

stop_mariadb() {
  local d=$1
  if kill -0 "$MARIADB_PID" 2>/dev/null; then
    chroot "$d" mariadb-admin --socket=/run/mysqld/mysqld.sock shutdown >/dev/null 2>&1 || kill "$MARIADB_PID" 2>/dev/null || true
    wait "$MARIADB_PID" 2>/dev/null || true
  fi
  umount "$d/proc" 2>/dev/null || true
  ip netns del "$MARIADB_NS" 2>/dev/null || true
  MARIADB_ROOT=""
}

# On any exit (die included), a temporary mariadbd still running is stopped.
MARIADB_PID=""; MARIADB_ROOT=""; MARIADB_NS=""
trap '[ -z "$MARIADB_ROOT" ] || stop_mariadb "$MARIADB_ROOT"' EXIT

sql() { local d=$1; shift; chroot "$d" mariadb --socket=/run/mysqld/mysqld.sock -uroot -e "$*"; }

# MariaDB as the mysql user, native AIO off (its io_uring/libaio contexts cannot be dumped), listening
# on all addresses, with a small database `zpbench` and a password-less user `bench` that may read it.
build_mariadb() {
  local d=$1
  debian_with "$d" mariadb-server
  cat >"$d/etc/mysql/mariadb.conf.d/90-zeropod.cnf" <<'CNF'
# zeropod-swift benchmarks: reachable from the host, no AIO, small buffers, no binary log.
[mysqld]
bind-address = 0.0.0.0
skip-name-resolve
innodb_use_native_aio = 0
innodb_buffer_pool_size = 64M
skip-log-bin
CNF
  mkdir -p "$d/run/mysqld"; chroot "$d" chown mysql:mysql /run/mysqld
  start_mariadb "$d"
  sql "$d" "CREATE DATABASE zpbench; CREATE TABLE zpbench.t (id INT PRIMARY KEY, v VARCHAR(64));
    INSERT INTO zpbench.t VALUES (1, 'zeropod-mariadb');
    CREATE USER 'bench'@'%'; GRANT SELECT ON zpbench.* TO 'bench'@'%'; FLUSH PRIVILEGES;"
  stop_mariadb "$d"
}

# A slow-starting Java HTTP server (bench/jvm/ZeropodBench.java, compiled with the host's javac for
# Java 17) on Debian's headless OpenJDK 17 runtime.
build_jvm() {
  local d=$1
  command -v javac >/dev/null || die "javac missing on the host (Debian package openjdk-17-jdk-headless)"
  debian_with "$d" openjdk-17-jre-headless
  mkdir -p "$d/opt/zeropod"
  javac --release 17 -d "$d/opt/zeropod" "$here/../bench/jvm/ZeropodBench.java"
}

# WordPress: web/ = Apache + mod_php + WordPress (Debian packages) serving on port 80, configured
# for its database at $ZP_WP_DB_ADDR; db/ = the mariadb rootfs with WordPress installed into it
# (wp_install run by php-cli at build time against a temporary mariadbd, so no browser step).
build_wordpress() {
  local d=$1
  local base; base=$(cached mariadb-v1 build_mariadb)
  mkdir -p "$d"
  debian_with "$d/web" apache2 libapache2-mod-php php-cli php-mysql wordpress wordpress-theme-twentytwentythree
  cp -a "$base" "$d/db"; rm -f "$d/db/.zp-complete"
  local web=$d/web
  cat >"$web/etc/wordpress/config-default.php" <<PHP
<?php
// zeropod-swift benchmarks: the database runs in its own container at a fixed address.
define('DB_NAME', 'wordpress');
define('DB_USER', 'wordpress');
define('DB_PASSWORD', 'zeropod');
define('DB_HOST', getenv('ZP_WP_DB_HOST') ?: '$ZP_WP_DB_ADDR');
define('WP_HOME', '$ZP_WP_HOME');
define('WP_SITEURL', '$ZP_WP_HOME');
define('WP_CONTENT_DIR', '/var/lib/wordpress/wp-content');
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_CRON_DISABLED', true);
define('DISABLE_WP_CRON', true);
\$table_prefix = 'wp_';
PHP
  cat >"$web/etc/apache2/sites-available/000-default.conf" <<'CONF'
<VirtualHost *:80>
    DocumentRoot /usr/share/wordpress
    Alias /wp-content /var/lib/wordpress/wp-content
    <Directory /usr/share/wordpress>
        Options FollowSymLinks
        AllowOverride Limit Options FileInfo
        DirectoryIndex index.php
        Require all granted
    </Directory>
    <Directory /var/lib/wordpress/wp-content>
        Options FollowSymLinks
        Require all granted
    </Directory>
    ErrorLog /dev/stderr
    CustomLog /dev/stdout combined
</VirtualHost>
CONF
  sed -i 's/^\(\s*StartServers\s*\).*/\12/; s/^\(\s*MinSpareServers\s*\).*/\11/; s/^\(\s*MaxSpareServers\s*\).*/\13/' \
    "$web/etc/apache2/mods-available/mpm_prefork.conf"
  sed -i 's#^ErrorLog .*#ErrorLog /dev/stderr#' "$web/etc/apache2/apache2.conf"
  rm -f "$web/etc/apache2/conf-enabled/other-vhosts-access-log.conf"
  echo 'ServerName zeropod-wordpress' >"$web/etc/apache2/conf-enabled/zz-zeropod.conf"
  mkdir -p "$web/run/apache2" "$web/run/lock/apache2"
  chroot "$web" sh -c '. /etc/apache2/envvars && apache2 -t' >/dev/null 2>&1 || { chroot "$web" sh -c '. /etc/apache2/envvars && apache2 -t' >&2 || true; die "apache2 configuration check failed in $web"; }

  start_mariadb "$d/db"
  sql "$d/db" "CREATE DATABASE wordpress; CREATE USER 'wordpress'@'%' IDENTIFIED BY 'zeropod';
    GRANT ALL ON wordpress.* TO 'wordpress'@'%'; FLUSH PRIVILEGES;"
  cat >"$web/tmp/zp-install.php" <<'PHP'
<?php
// Runs WordPress's installer without a browser (build time only).
define('WP_INSTALLING', true);
$_SERVER['HTTP_HOST'] = 'zeropod-wordpress';
$_SERVER['REQUEST_URI'] = '/';
require '/usr/share/wordpress/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
$r = wp_install('zeropod bench', 'admin', 'admin@example.invalid', true, '', 'zeropod-admin-password');
switch_theme('twentytwentythree');
wp_insert_post(['post_title' => 'zeropod hello', 'post_content' => 'zeropod-wordpress post body', 'post_status' => 'publish']);
echo "installed user " . $r['user_id'] . "\n";
PHP
  mount -t proc proc "$web/proc"
  if ! ip netns exec "$MARIADB_NS" env ZP_WP_DB_HOST=127.0.0.1 chroot "$web" php /tmp/zp-install.php >"$ROOT/wp-install.log" 2>&1; then
    umount "$web/proc"; tail -n 20 "$ROOT/wp-install.log" >&2; die "WordPress install failed (log: $ROOT/wp-install.log)"
  fi
  umount "$web/proc"
  rm -f "$web/tmp/zp-install.php"
  stop_mariadb "$d/db"
}

# The pooled-app (scripts/testapps/pooled-app.c, static, built with the host's gcc) on the busybox
# rootfs: an HTTP server that keeps one pooled connection to a MariaDB (the `pooled` bench
# workload's sidecar) and makes one query on it per request.
build_pooled() {
  local d=$1
  command -v gcc >/dev/null || die "gcc missing on the host"
  cp -a "$(cached busybox-v1 build_busybox)" "$d"
  rm -f "$d/.zp-complete"
  gcc -static -O2 -o "$d/bin/pooled-app" "$here/testapps/pooled-app.c"
}

[ $# -gt 0 ] || die "usage: $0 busybox|debian|nginx|mariadb|jvm|wordpress|pooled [...]"
for name in "$@"; do
  case "$name" in
    busybox) cached busybox-v1 build_busybox ;;
    debian) cached debian-bookworm-v1 build_debian ;;
    nginx) cached nginx-v1 build_nginx ;;
    mariadb) cached mariadb-v1 build_mariadb ;;
    jvm) cached jvm-v1 build_jvm ;;
    wordpress) cached wordpress-v1 build_wordpress ;;
    pooled) cached "pooled-v1-$(sha256sum "$here/testapps/pooled-app.c" | cut -c1-12)" build_pooled ;;
    *) die "unknown rootfs '$name' (known: busybox, debian, nginx, mariadb, jvm, wordpress, pooled)" ;;
  esac
done
