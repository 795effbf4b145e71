"""Database connections, by name. The database queue driver's `channel` is one of these names."""

from providers.environment import env

# The connection used when none is named.
DEFAULT = env("DB_CONNECTION", "sqlite")

# SQLAlchemy URLs; credentials come from the environment (or .env).
# A relative SQLite path is relative to the project root.
CONNECTIONS = {
    "sqlite": env("DB_SQLITE_URL", "sqlite:///storage/database.sqlite", cast=False),
    "pgsql": env("DB_PGSQL_URL", "postgresql+psycopg://root@127.0.0.1:5432/test", cast=False),
    "mysql": env("DB_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test", cast=False),
}
