"""The table of the "shared" cache on the embedded default (no Redis), so `migrate` is enough."""

from django.core.management import call_command
from django.db import migrations


def create_cache_tables(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("integrations", "0002_sweep_schedule")]

    operations = [migrations.RunPython(create_cache_tables, migrations.RunPython.noop)]
