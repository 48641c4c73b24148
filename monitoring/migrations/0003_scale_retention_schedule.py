"""The retention prune's django-q2 schedule, every 15 minutes (idempotent).

`monitoring.tasks.retention` deletes, in batches, what is kept for a while only (figures,
errors, probe results, delivered ledger rows, stored webhook events); the settings say how long.
"""

from django.db import migrations

NAME = "monitoring-retention"
FUNC = "monitoring.tasks.retention"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME, defaults={"func": FUNC, "schedule_type": "I", "minutes": 15, "repeats": -1}
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0002_schedules")]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
