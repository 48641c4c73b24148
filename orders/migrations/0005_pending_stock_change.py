"""The record of stock moved for an order write to a store of its own (DynamoDB) until the
write's outcome settles it (`orders.services`, "Stock and the order store")."""

import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0004_expiry_schedule"),
    ]

    operations = [
        migrations.CreateModel(
            name="PendingStockChange",
            fields=[
                (
                    "id",
                    models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False),
                ),
                ("order_id", models.UUIDField(db_index=True)),
                ("event_id", models.UUIDField(unique=True)),
                (
                    "kind",
                    models.CharField(choices=[("reserve", "Reserve"), ("release", "Release")], max_length=16),
                ),
                ("lines", models.JSONField(help_text="[[product id, quantity], ...]")),
                ("created_at", models.DateTimeField()),
                ("settle_after", models.DateTimeField(db_index=True)),
            ],
        ),
    ]
