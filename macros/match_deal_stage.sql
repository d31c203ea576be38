{#-
    The stage of the layout that a deal's (pipeline, stage) names: the stage of that pipeline, or, when the
    layout does not list the pair, the stage of that name (int_stages_by_name). Orgs without pipelines leave
    every deal's Pipeline empty while the layout still lists the one pipeline; without the fallback those deals
    would never be won or lost.

    One rule for a deal's current state (int_deals_joined_to_stages) and for every change of its history
    (int_deal_history), so both call a deal open, won or lost by the same stage. `records` is the relation (a
    CTE) with the pipeline and stage columns, `stages` and `stages_by_name` the model's import CTEs of
    stg_zoho__deal_stages and int_stages_by_name. The select returns every column of `records` and
    matched_stage_id: null when no pipeline of the layout has a stage of that name (data_quality_issues lists
    such deals as stage_in_no_pipeline).
-#}
{% macro match_deal_stage(records, stages='stages', stages_by_name='stages_by_name') -%}
    select
        {{ records }}.*,
        coalesce(same_pipeline.stage_id, same_name.stage_id) as matched_stage_id

    from {{ records }}
    left join {{ stages }} as same_pipeline
        on {{ records }}.pipeline = same_pipeline.pipeline
        and {{ records }}.stage = same_pipeline.stage
    left join {{ stages_by_name }} as same_name
        on {{ records }}.stage = same_name.stage
{%- endmacro %}
