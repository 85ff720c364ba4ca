{#- No row's event time is more than var future_tolerance_hours after its load time (such lines
    are quarantined as 'future ts'). -#}
{% test no_future_events(model, column_name, loaded_at_column='_loaded_at') %}
select {{ column_name }}, {{ loaded_at_column }}
from {{ model }}
where {{ column_name }} > {{ ts_add('second', (var('future_tolerance_hours') * 3600) | int, loaded_at_column) }}
{% endtest %}
