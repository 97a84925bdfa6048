-- The experiment assignments the syncs recorded, one row per person and sync attempt that assigned them; no
-- rows while the load stage has not created the table (see the source_or_empty macro).

with

source as (

    {{ source_or_empty(source('audit', 'experiment_assignments'), empty_experiment_assignments()) }}

),

renamed as (

    select
        experiment,
        person_id,
        arm,
        cast(holdout_share as double) as holdout_share,
        cast(first_assigned_date as date) as first_assigned_date,
        coalesce(was_sent_before_assignment, false) as was_sent_before_assignment,
        sync_name,
        attempt_id
    from source

)

select * from renamed
