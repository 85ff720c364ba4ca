-- Point-in-time engagement of each post: one row per (post, day with events) holding the
-- cumulative counts of everything up to the END of that day, valid from `valid_from` (the
-- next midnight). A point-in-time join (Feast) on a timestamp t therefore reads only events
-- of days that ended before t: no feature ever sees its own label's day or the future.
{{ daily_activity('post_id') }}
