"""The door to MariaDB (and the MySQL family): the only package that imports PyMySQL.

    connection.py  `mariadb://user[:password]@host:port/db` URLs, connections (utf8mb4,
                   UTC session time zone, no autocommit), `connect()` as a context
    errors.py      driver errors -> errors of our tree; which error numbers mean "wait"
    sql.py         backtick quoting of identifiers and `db.table` names
"""
