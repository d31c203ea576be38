{#-
    `unique`, over the rows the last build wrote. For an append-only incremental model whose past rows never
    change (deal_daily_states), rows written earlier were tested when they were written, and a build only adds
    days after the ones it keeps, so a key can only repeat among the rows of one build. Testing those rows
    instead of the whole history keeps a daily build's tests as small as its changes (the whole-table
    `unique` on 35 million daily states took 16 s of every build). After a full refresh every row is of the
    last build, so the whole table is tested.
-#}
{% test unique_in_last_build(model, column_name, built_at='built_at') %}

with

last_build as (

    select {{ column_name }} as tested_value
    from {{ model }}
    where {{ built_at }} = (select max({{ built_at }}) from {{ model }})

)

select
    tested_value,
    count(*) as occurrences

from last_build
group by tested_value
having count(*) > 1

{% endtest %}
