#!/bin/sh
# docker-compose.yml's MariaDB: the account Debezium's MariaDB connector reads the binlog
# with (the privileges its documentation lists), its password from DEBEZIUM_PASSWORD.
# Run once by the image's entrypoint, when the data volume is new; the application
# account (MARIADB_USER) is the image's own, given the rights `cdc-recon source install`
# needs for its change-log triggers.
set -eu
mariadb -uroot -p"$MARIADB_ROOT_PASSWORD" <<SQL
CREATE USER IF NOT EXISTS 'debezium'@'%' IDENTIFIED BY '${DEBEZIUM_PASSWORD}';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR, LOCK TABLES
    ON *.* TO 'debezium'@'%';
GRANT ALL PRIVILEGES ON *.* TO '${MARIADB_USER}'@'%';
SQL
