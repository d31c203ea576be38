"""The org's simulated calendar.

The sandbox does not follow the wall clock: the org lives on `today` (by default the current date in
the org timezone) and its "now" is the end of that day. `SandboxOrg.advance()` moves it a day at a time.
Timestamps are epoch seconds; the calendar converts between them and local days of the org timezone,
which is also the timezone of every CRM user (Zoho renders datetimes with the user's offset).
"""

from __future__ import annotations

import datetime as dt
import random
from functools import lru_cache
from zoneinfo import ZoneInfo

DAY = dt.timedelta(days=1)
# Sales teams work office hours; events fall between 08:00 and 19:00 local time.
BUSINESS_HOURS = (8 * 3600, 19 * 3600)
# Relative activity per weekday (Monday first): weekends are quiet but not dead.
WEEKDAY_ACTIVITY = (1.0, 1.05, 1.05, 1.0, 0.9, 0.4, 0.3)


class OrgCalendar:
    def __init__(self, timezone: str) -> None:
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self.day_start = lru_cache(maxsize=4096)(self._day_start)

    def current_date(self) -> dt.date:
        return dt.datetime.now(self.tz).date()

    def _day_start(self, day: dt.date) -> int:
        """Epoch second of local midnight (correct across DST changes, unlike day * 86400)."""
        return int(dt.datetime.combine(day, dt.time(), self.tz).timestamp())

    def day_end(self, day: dt.date) -> int:
        return self.day_start(day + DAY) - 1

    def local_date(self, ts: int) -> dt.date:
        return dt.datetime.fromtimestamp(ts, self.tz).date()

    def business_second(self, day: dt.date, rng: random.Random) -> int:
        return self.day_start(day) + rng.randrange(*BUSINESS_HOURS)

    @staticmethod
    def activity(day: dt.date) -> float:
        return WEEKDAY_ACTIVITY[day.weekday()]
