{#-
    `not_null` of some columns of a staging model over raw rows, for the rows the syncs since the last build wrote
    (the syncs after the synced_through of `kept_by`, as for unique_in_new_loads). A raw row never changes once
    written: a sync that sees the record again writes a new row with its own load id. So the rows of earlier
    syncs were tested by the build that first read them, and every row is tested on a first build or a full
    refresh. One test for the model's columns: on PostgreSQL each column's own `not_null` read the whole raw
    table (0.4-1 s apiece at two million leads); this reads a day's rows once, by the index on the load id.
-#}
{% test not_null_in_new_loads(model, columns, kept_by) %}

-- depends_on: {{ ref('stg_zoho__loads') }}

{%- set kept = table_marking_tested_loads(kept_by) %}

select *
from {{ model }}
where (
    {%- for column in columns %}
    {{ column }} is null{{ ' or' if not loop.last }}
    {%- endfor %}
)
{%- if kept is not none %}
    and load_id in {{ loads_since_last_build(kept) }}
{%- endif %}

{% endtest %}
