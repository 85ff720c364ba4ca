-- The share of positive labels in ml_ranking_samples lies within
-- [var label_balance_min, var label_balance_max] (a broken label or join shows up as all 0s
-- or all 1s). An empty table passes.
select count(*) as n_rows, avg(label * 1.0) as positive_share
from {{ ref('ml_ranking_samples') }}
having count(*) > 0
   and (avg(label * 1.0) < {{ var('label_balance_min') }}
        or avg(label * 1.0) > {{ var('label_balance_max') }})
