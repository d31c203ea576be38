{#- The metrics in the order they are documented: (column of int_kpis_by_day, unit). Money is in the org's home
    currency, whose ISO code becomes the unit of an amount. -#}
{%- set metrics = [
    ('leads_created', 'count'),
    ('leads_converted', 'count'),
    ('deals_created', 'count'),
    ('deals_created_amount', 'amount'),
    ('deals_won', 'count'),
    ('deals_won_amount', 'amount'),
    ('deals_lost', 'count'),
    ('deals_lost_amount', 'amount'),
    ('open_pipeline_count', 'count'),
    ('open_pipeline_amount', 'amount'),
    ('open_pipeline_weighted_amount', 'amount'),
    ('win_rate', 'ratio'),
    ('win_rate_30d', 'ratio'),
] -%}

with

kpis_by_day as (

    select * from {{ ref('int_kpis_by_day') }}

),

context as (

    select * from {{ ref('int_sync_context') }}

),

unpivoted as (

    {% for metric, unit in metrics %}
    select
        kpi_date,
        cast('{{ metric }}' as {{ dbt.type_string() }}) as metric,
        cast({{ metric }} as {{ dbt.type_numeric() }}) as value,
        cast({{ 'context.home_currency_code' if unit == 'amount' else "'" ~ unit ~ "'" }} as {{ dbt.type_string() }})
            as unit,
        -- The day of the last sync is still running: its counts can only grow.
        kpi_date < context.as_of_date as is_complete

    from kpis_by_day
    cross join context
    {% if not loop.last %}
    union all
    {% endif %}
    {%- endfor %}

),

final as (

    select
        {{ dbt.concat(['cast(kpi_date as ' ~ dbt.type_string() ~ ')', "'-'", 'metric']) }} as kpi_id,
        kpi_date,
        metric,
        value,
        unit,
        is_complete

    from unpivoted

)

select * from final
