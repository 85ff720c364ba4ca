-- Every train sample is older than every validation sample, which is older than every test one.
with by_split as (
    select split, min(ts) as first_ts, max(ts) as last_ts
    from {{ ref('ml_ranking_samples') }}
    group by split
)
select t.split as earlier, l.split as later
from by_split t
join by_split l
  on (t.split = 'train' and l.split in ('validation', 'test'))
  or (t.split = 'validation' and l.split = 'test')
where t.last_ts > l.first_ts
