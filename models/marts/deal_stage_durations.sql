{#- Kept deal by deal like int_deal_history (macros/kept_by_record.sql): a build rewrites the stage visits of
    the deals whose history it rewrote. -#}
{{ config(**kept_by_record_config('deal_id', pre_hook=[
    "{{ empty_when_upstream_rewrote_everything(ref('int_deal_history')) }}",
], synced_through=false)) }}

with

history as (

    select * from {{ ref('int_deal_history') }}
    -- A span reconstructed without Stage History has no stage to time.
    where stage is not null
        and {{ records_rewritten_since_last_build(ref('int_deal_history'), 'deal_id') }}

),

marked as (

    select
        history.*,
        case
            -- history holds no null stage, so a plain comparison tells a new visit (the first has no lag)
            when lag(stage) over (partition by deal_id order by changed_at) = stage
                then 0
            else 1
        end as starts_visit

    from history

),

numbered as (

    select
        marked.*,
        sum(starts_visit) over (partition by deal_id order by changed_at rows between unbounded preceding and current row)
            as visit_number

    from marked

),

visits as (

    select
        deal_id,
        visit_number,
        min(stage) as stage,
        min(pipeline) as pipeline,
        min(stage_order) as stage_order,
        min(status) as status,
        min(changed_at) as entered_at,
        min(effective_date) as entered_date,
        bool_or(is_reconstructed) as is_reconstructed

    from numbered
    group by deal_id, visit_number

),

final as (

    select
        {{ dbt.concat(['deal_id', "'-'", 'cast(visit_number as ' ~ dbt.type_string() ~ ')']) }} as stage_visit_id,
        deal_id,
        cast(visit_number as {{ dbt.type_int() }}) as visit_number,
        pipeline,
        stage,
        stage_order,
        status,
        entered_at,
        entered_date,
        lead(entered_date) over (partition by deal_id order by visit_number) as left_date,
        lead(stage) over (partition by deal_id order by visit_number) as next_stage,
        lead(stage_order) over (partition by deal_id order by visit_number) as next_stage_order,
        lead(status) over (partition by deal_id order by visit_number) as next_status,
        cast(
            {{ dbt.datediff('entered_date', 'lead(entered_date) over (partition by deal_id order by visit_number)', 'day') }}
            as {{ dbt.type_int() }}
        ) as days_in_stage,
        is_reconstructed,
        {{ build_started_at() }} as built_at

    from visits

)

select * from final
