"""PostgreSQL: the only package that imports psycopg2 (engines, raw connections, COPY)."""
