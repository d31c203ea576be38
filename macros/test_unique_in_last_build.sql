{#-
    `unique`, over the rows the last build wrote. For an incremental model whose past rows never change, rows
    written earlier were tested when they were written, so a key can only repeat among the rows a build writes:
    testing those rows instead of the whole history keeps a daily build's tests as small as its changes (a
    whole-table `unique` reads every daily state of every day, every build). With `day_column`, for a model
    that adds days and rewrites part of its last day (deal_daily_states): every row from the first day the last
    build wrote, kept ones included, so a row written again beside one left in place is caught too. After a full
    refresh every row is of the last build, so the whole table is tested.
-#}
{% test unique_in_last_build(model, column_name, built_at='built_at', day_column=none) %}

{#- The first day the last build wrote, as a literal: against a subquery's day PostgreSQL expected a third of 35
    million rows and read them all. OFFSET 0 keeps PostgreSQL from answering min() by walking the index on the
    day from the oldest one (through every past day), where the rows of the last build are found by their index on built_at. -#}
{%- set first_day = none -%}
{%- if day_column is not none and execute -%}
    {%- set query -%}
        select min({{ day_column }})
        from (
            select {{ day_column }} from {{ model }}
            where {{ built_at }} = (select max({{ built_at }}) from {{ model }})
            offset 0
        ) as written
    {%- endset -%}
    {%- set first_day = run_query(query).columns[0].values()[0] -%}
{%- endif %}

with

last_build as (

    select {{ column_name }} as tested_value
    from {{ model }}
    {%- if day_column is none %}
    where {{ built_at }} = (select max({{ built_at }}) from {{ model }})
    {%- else %}
    {%- if first_day is not none %}
    where {{ day_column }} >= cast('{{ first_day }}' as date)
    {%- endif %}
    {%- endif %}

)

select
    tested_value,
    count(*) as occurrences

from last_build
group by tested_value
having count(*) > 1

{% endtest %}
