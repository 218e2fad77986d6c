#!/usr/bin/env bash
# Make sure the servers the scale-out tests use are installed and running:
# PostgreSQL, MariaDB and RabbitMQ, each with an `onestack` account.
# As root it installs what is missing (Debian/Ubuntu); otherwise it only reports.
set -u

have_port() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

missing=()
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
    echo "warning: could not install ${missing[*]}; tests needing them will skip" >&2
fi

wait_port() {  # port, seconds
  for _ in $(seq 1 "$2"); do have_port "$1" && return 0; sleep 1; done; return 1
}

if ! have_port 5432 && command -v pg_ctlcluster >/dev/null; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] && as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 5432 30 || echo "warning: PostgreSQL did not start" >&2
fi
if have_port 5432; then
  as_root runuser -u postgres -- psql -q -tc "SELECT 1 FROM pg_roles WHERE rolname='onestack'" 2>/dev/null | grep -q 1 ||
    as_root runuser -u postgres -- psql -q -c "CREATE ROLE onestack LOGIN CREATEDB PASSWORD 'onestack'" >/dev/null 2>&1 ||
    echo "warning: could not create the onestack PostgreSQL role" >&2
fi

if ! have_port 3306 && [ -x /usr/sbin/mariadbd ]; then
  as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null
  as_root start-stop-daemon --start --oknodo --background --chuid mysql --exec /usr/sbin/mariadbd
  wait_port 3306 30 || echo "warning: MariaDB did not start" >&2
fi
if have_port 3306 && command -v mariadb >/dev/null; then
  as_root mariadb -u root -e "CREATE USER IF NOT EXISTS 'onestack'@'127.0.0.1' IDENTIFIED BY 'onestack';
    CREATE USER IF NOT EXISTS 'onestack'@'localhost' IDENTIFIED BY 'onestack';
    GRANT ALL ON *.* TO 'onestack'@'127.0.0.1'; GRANT ALL ON *.* TO 'onestack'@'localhost';" 2>/dev/null ||
    echo "warning: could not create the onestack MariaDB user" >&2
fi

if ! have_port 5672 && command -v rabbitmq-server >/dev/null; then
  as_root rabbitmq-server -detached >/dev/null 2>&1
  wait_port 5672 60 || echo "warning: RabbitMQ did not start" >&2
fi
exit 0
