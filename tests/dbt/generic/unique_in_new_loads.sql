{#-
    `unique` of a key (one column or several) of a staging model over raw rows, for the rows the syncs since the
    last build wrote: each of their keys occurs once in the whole model. The rows of earlier syncs were tested
    by the build that first read them: the syncs since the last build are those after the synced_through of
    `kept_by`, the model kept record by record that reads this one (named, not ref'd, so that the test runs
    before it as usual; a failing test stops the build before it, and the next build tests those syncs again).
    A day's sync writes a hundredth of the rows, and the test reads the keys of those rows only (10 ms instead of
    240 ms over two million lead versions). Every row is tested on a first build or a full refresh.
-#}
{% test unique_in_new_loads(model, columns, kept_by) %}

-- depends_on: {{ ref('stg_zoho__loads') }}

{%- set kept = table_marking_tested_loads(kept_by) %}

with

{% if kept is none -%}
tested as (

    select {{ columns | join(', ') }}
    from {{ model }}

),
{%- else -%}
new_keys as (

    select distinct {{ columns | join(', ') }}
    from {{ model }}
    where load_id in {{ loads_since_last_build(kept) }}

),

tested as (

    select
        {%- for column in columns %}
        rows.{{ column }}{{ ',' if not loop.last }}
        {%- endfor %}

    from {{ model }} as rows
    inner join new_keys
        on {% for column in columns -%}
            rows.{{ column }} = new_keys.{{ column }}{{ ' and ' if not loop.last }}
        {%- endfor %}

),
{%- endif %}

grouped as (

    select
        {{ columns | join(', ') }},
        count(*) as occurrences

    from tested
    group by {{ columns | join(', ') }}

)

select * from grouped
where occurrences > 1

{% endtest %}
