"""The only package that talks to confluent-kafka; its errors become ours here."""
