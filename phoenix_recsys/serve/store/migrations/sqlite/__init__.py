"""SQLite migrations, one numbered `.sql` file each (see `..migrations`)."""
