"""Monitoring's two django-q2 schedules, every 5 minutes (idempotent).

`monitoring.tasks.probe_all` itself honours PROBE_INTERVAL_MINUTES (0: skip; longer intervals
skip runs), since a migration cannot read the settings of the deployment it will run in.
"""

from django.db import migrations

SCHEDULES = {
    "monitoring-probes": "monitoring.tasks.probe_all",
    "monitoring-housekeeping": "monitoring.tasks.housekeeping",
}


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, func in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": "I", "minutes": 5, "repeats": -1},
        )


def remove_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=list(SCHEDULES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
