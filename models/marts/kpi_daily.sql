{#- The metrics in the order they are documented: (column of int_kpis_by_day, unit). -#}
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

unpivoted as (

    {% for metric, unit in metrics %}
    select
        kpi_date,
        cast('{{ metric }}' as {{ dbt.type_string() }}) as metric,
        cast({{ metric }} as {{ dbt.type_numeric() }}) as value,
        cast('{{ unit }}' as {{ dbt.type_string() }}) as unit

    from kpis_by_day
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
        unit

    from unpivoted

)

select * from final
