-- The first-order Markov chain over channel paths, as a table: how often a journey moved from one state to the
-- next, and the share of the moves out of a state that went to each next one. States are the channels,
-- '(start)', and the two ends '(conversion)' and '(null)'. The journeys and their moves are counted per person
-- (macro markov_person_moves: a converting journey is a purchase's conversion path, one that did not convert a
-- run of touches on no path); a daily build counts again only the persons whose touches or purchases changed
-- (macros/attribution.sql) and sums every person's kept counts here. attribution_markov_removal_effects solves
-- the chain.
-- depends_on: {{ ref('fct_conversion_paths') }}
-- depends_on: {{ ref('fct_touchpoints') }}
{{ config(pre_hook="{{ update_markov_person_moves() }}") }}

with

person_moves as (

    select * from {{ markov_person_moves_table() }}

),

counted as (

    select
        from_state,
        to_state,
        cast(sum(transitions_count) as bigint) as transitions_count
    from person_moves
    group by from_state, to_state

),

final as (

    select
        from_state || ' > ' || to_state as transition_id,
        from_state,
        to_state,
        transitions_count,
        sum(transitions_count) over (partition by from_state) as from_state_count,
        transitions_count / sum(transitions_count) over (partition by from_state) as transition_probability
    from counted

)

select * from final
