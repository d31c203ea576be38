with

stages as (

    select * from {{ ref('stg_zoho__deal_stages') }}

),

-- A deal whose (pipeline, stage) the layout does not list falls back to a stage of that name. Orgs without
-- pipelines enabled leave every deal's Pipeline empty while the layout still lists the one pipeline; counting
-- those deals as open would hide every win and loss. When several pipelines have a stage of that name, the
-- oldest pipeline's wins (lowest id: normally the Standard pipeline every org starts with).
ranked as (

    select
        stage,
        stage_id,
        row_number() over (
            partition by stage
            order by {{ dbt.length('pipeline_id') }}, pipeline_id, stage_order, stage_id
        ) as preference

    from stages

),

final as (

    select
        stage,
        stage_id

    from ranked
    where preference = 1

)

select * from final
