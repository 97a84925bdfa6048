with

source as (

    select * from {{ source('crm', 'crm_contacts') }}

),

latest as (

    -- versions updated after the as-of day are hidden; the latest remaining version wins
    select
        *,
        min(updated_at) over (partition by trim(contact_id)) as first_seen_at
    from source
    {{ as_of_latest_version('trim(contact_id)', updated_at='updated_at') }}

),

renamed as (

    select
        trim(contact_id) as contact_id,
        {{ cleaned_person_columns() }}
        coalesce(email_opt_in, false) as has_email_opt_in,
        updated_at,
        first_seen_at,
        _batch_id as batch_id,
        _extracted_at as extracted_at
    from latest

),

validated as (

    select
        contact_id,
        {{ validated_person_columns(extra_columns=['has_email_opt_in']) }}
    from renamed

)

select * from validated
